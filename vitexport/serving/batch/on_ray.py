"""The batch job on Ray Data: shards spread over a pool of actors, each holding one `Worker` (one Predictor).

The driver (this process) lists the shards, skips those already done, and hands the others to
``map_batches`` over an actor pool, one shard per call; each actor runs a whole shard with the same `Worker`
as a local run and returns its table, which the driver commits as a local run does. So rows, layout and
resuming are the local run's. An actor that dies (a killed process, a lost node) is restarted and its shard
run again, up to `RETRIES` times; a shard that comes back twice is committed once.

- ``--ray``: a new local Ray instance (never one found through ``RAY_ADDRESS``), stopped at the end;
  ``--address``: a running cluster, whose nodes must see the model and the images at the same paths
  (relative paths are taken from the driver's current folder, which actors enter when it exists there).
- A stopping signal (Ctrl-C, SIGTERM, SIGHUP) stops Ray first, lets a commit in progress finish, then goes
  to the handler that was there before (the CLI's: staging folders removed, exit 128 + N).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from vitexport._util.errors import EnvironmentProblem, ServingError, ServingPathError, VitexportError, one_line
from vitexport._util.interrupt import HANDLED
from vitexport.serving.batch.infer import BatchOptions, Worker
from vitexport.serving.batch.job import Progress, Summary, Tracker, job_description, summarize
from vitexport.serving.batch.output import OutputFolder
from vitexport.serving.batch.sources import Shard, Source, all_shards

logger = logging.getLogger(__name__)

RETRIES = 4  # restarts of a dead actor, and runs of a shard whose actor died
STOP_WAIT_S = 30.0
GPU_PROVIDERS = ("cuda", "tensorrt")


def ray_modules() -> tuple[Any, Any]:
    """(ray, ray.data), or `EnvironmentProblem` (exit 2) with the install command."""
    from vitexport._util.extras import install_command

    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EnvironmentProblem(f"--ray and --address need Ray Data ({one_line(exc, 80)}); install it with: "
                                 f"{install_command('batch')}") from None
    return ray, ray.data


class ShardActor:
    """A Ray Data actor: whole shards through one `Worker`, each returned as Arrow IPC bytes."""

    def __init__(self, model: str, options: BatchOptions, keys: tuple[str, ...], cwd: str) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative image paths mean what they meant to the driver
        self.worker = Worker(model, options, keys, spin=False)  # actors may share a node's cores

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pyarrow as pa

        tables = []
        for blob in batch["shard"]:
            table = self.worker.table(pickle.loads(blob))  # our own descriptor, from our own driver
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            tables.append(sink.getvalue().to_pybytes())
        return {"index": np.asarray(batch["index"]), "table": np.array(tables, dtype=object)}


def _read_table(blob: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()


def _check_model(model: str, options: BatchOptions, keys: tuple[str, ...], local: bool) -> tuple[str, str, bool]:
    """(provider, note, model here): the model loaded once here when it is here, so a bad model or provider
    fails before Ray starts; ``auto`` is resolved here for a local Ray."""
    if not os.path.exists(model):
        if local:
            raise ServingPathError(f"model {model!r} does not exist; pass an exported .onnx file")
        logger.warning("%s is not here; it must exist at that path on the cluster's nodes", model)
        return options.provider, "", False
    with Worker(model, replace(options, workers=1, threads=1), keys) as worker:
        p = worker.predictor
        if local:
            return p.provider, p.provider_note, True
        return options.provider, "", True


def run_on_ray(model: str, sources: Sequence[Source], output: str, options: BatchOptions, keys: tuple[str, ...],
               *, force: bool, address: str | None, replicas: int | None,
               progress: Callable[[Progress], None] | None) -> Summary:
    """`vitexport.batch.run` with ``ray=True`` or an ``address``."""
    ray, data = ray_modules()
    provider, note, here = _check_model(model, options, keys, local=address is None)
    actor_options = replace(options, provider=provider, threads=options.threads or 1)
    with OutputFolder(output, job_description(model, sources, options, keys, model_here=here), force) as out:
        shards = list(all_shards(sources, options.shard_size))
        counts = [s.count for s in shards]
        tracker = Tracker(progress, None if None in counts else sum(c or 0 for c in counts), len(shards))
        pending = []
        for shard in shards:
            done = out.done(shard)
            if done is None:
                pending.append(shard)
            else:
                tracker.skip(done)
        if pending:
            model_path = os.path.abspath(model) if here else model
            _execute(ray, data, pending, out, tracker, (model_path, actor_options, keys, os.getcwd()), address,
                     replicas)
        return summarize(out, tracker, len(shards), "ray", provider, note, sources)


def _start_ray(ray: Any, address: str | None) -> None:
    """Connect to ``address``, or start a new local instance; the stopping signals' handlers are kept
    (``ray.init`` replaces SIGTERM's with one that raises SystemExit anywhere)."""
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in HANDLED} if main else {}
    try:
        if address is not None:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            saved = os.environ.pop("RAY_ADDRESS", None)  # local means a new instance, never a cluster found by the env
            try:
                ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            finally:
                if saved is not None:
                    os.environ["RAY_ADDRESS"] = saved
    finally:
        for s, h in handlers.items():
            if h is not None:
                signal.signal(s, h)


def _execute(ray: Any, data: Any, pending: list[Shard], out: OutputFolder, tracker: Tracker,
             actor_args: tuple[str, BatchOptions, tuple[str, ...], str], address: str | None,
             replicas: int | None) -> None:
    """Start or join Ray, run the pending shards, stop or leave Ray; Ray's prints go to stderr meanwhile."""
    with contextlib.redirect_stdout(sys.stderr):  # Ray prints its workers' errors to stdout: the caller's results
        _start_ray(ray, address)
        try:
            _run_pool(ray, data, pending, out, tracker, actor_args, replicas)
        finally:
            ray.shutdown()


def _run_pool(ray: Any, data: Any, pending: list[Shard], out: OutputFolder, tracker: Tracker,
              actor_args: tuple[str, BatchOptions, tuple[str, ...], str], replicas: int | None) -> None:
    """Run the pending shards on a pool of actors and commit each as it comes back."""
    options = actor_args[1]
    threads = options.threads or 1
    size = replicas or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
    size = min(size, len(pending))
    data.DataContext.get_current().enable_progress_bars = False
    gpu = {"num_gpus": 1} if options.provider in GPU_PROVIDERS else {}
    ds = data.from_items([{"index": s.index, "shard": pickle.dumps(s)} for s in pending],
                         override_num_blocks=len(pending))
    with warnings.catch_warnings():  # Ray 2.60 deprecates these keywords but names no other way to bound retries
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(ShardActor, batch_size=1, batch_format="numpy",
                            compute=data.ActorPoolStrategy(size=size), fn_constructor_args=actor_args,
                            num_cpus=threads, max_restarts=RETRIES, max_task_retries=RETRIES, **gpu)
    waiting = {s.index: s for s in pending}

    def consume(stop: threading.Event) -> None:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for index, blob in zip(batch["index"], batch["table"], strict=True):
                if stop.is_set():
                    return
                shard = waiting.pop(int(index), None)
                if shard is None:  # run twice after a failure: the first copy was committed
                    continue
                tracker.committed(out.commit(shard, _read_table(blob)))

    logger.info("running %d shards on %d Ray actors (%d engine threads each)", len(pending), size, threads)
    _run_until_signal(consume, ray.shutdown)
    if waiting:
        raise ServingError(f"{len(waiting)} shards did not come back from Ray; rerun the command to run them")


def _run_until_signal(work: Callable[[threading.Event], None], on_stop: Callable[[], None]) -> None:
    """``work(stop)`` in a thread while the main thread waits; a stopping signal sets ``stop``, calls ``on_stop``,
    waits for the work to end (a commit in progress finishes) and is then sent again to the previous handler."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        _wrap_errors(work, stop)
        return
    got: list[int] = []
    errors: list[BaseException] = []

    def handler(signum: int, frame: Any) -> None:
        got.append(signum)
        stop.set()

    def target() -> None:
        try:
            _wrap_errors(work, stop)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    previous = {s: signal.signal(s, handler) for s in HANDLED}
    thread = threading.Thread(target=target, name="vitexport-batch-ray", daemon=True)
    try:
        thread.start()
        while thread.is_alive() and not stop.wait(0.2):
            pass
        if got:
            on_stop()
            thread.join(STOP_WAIT_S)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if got:
        os.kill(os.getpid(), got[0])
        raise KeyboardInterrupt  # the previous handler returned (or ignores the signal): stop all the same
    thread.join()
    if errors:
        raise errors[0]


def _wrap_errors(work: Callable[[threading.Event], None], stop: threading.Event) -> None:
    try:
        work(stop)
    except VitexportError:
        raise
    except Exception as exc:
        if stop.is_set():
            return
        raise ServingError(f"the job failed on Ray ({one_line(exc, 300, kind=True)}); the shards committed so far "
                           "are kept: rerun the command to resume") from exc


__all__ = ["RETRIES", "ShardActor", "ray_modules", "run_on_ray"]
