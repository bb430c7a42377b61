"""`run`: a model over every image of some sources, into a folder of Parquet shards, here or on Ray.

The job is its shards (`sources`), run one at a time here by a `Worker` (`infer`: decoding threads beside
the engine) or spread over a pool of Ray actors each holding one (`on_ray`); either way a finished shard is
committed whole (`output`) and a rerun skips the shards already there. Returns a `Summary`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from vitexport._util.errors import ServingPathError, UsageError
from vitexport.serving.batch.infer import BatchOptions, Worker
from vitexport.serving.batch.output import OutputFolder, ShardInfo, file_sha256
from vitexport.serving.batch.sources import (
    Source,
    all_shards,
    key_columns,
    open_sources,
    source_paths,
)

logger = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.1


@dataclass(frozen=True)
class Progress:
    """Where a running job stands (given to the ``progress`` callback at most every 0.1 s and at the end)."""

    images: int  # rows in committed or running shards, those skipped as already done included
    total: int | None  # images in the job, when known before reading (not with tar sources)
    failed: int  # error rows among ``images``
    processed: int  # images run by this call
    shards: int  # shards committed or skipped
    total_shards: int | None
    seconds: float  # since this call started its first shard


@dataclass(frozen=True)
class Summary:
    """What a finished job left in its output folder, and what this call did."""

    output: str
    images: int  # rows in the output
    failed: int  # error rows in the output
    processed: int  # images run by this call (the rest were in shards already done)
    shards: int
    skipped_shards: int  # complete before this call: not run again
    seconds: float  # first shard to last (model loading excluded; on Ray, Ray and its actors starting included)
    mode: str  # "local" or "ray"
    provider: str
    provider_note: str = ""
    ignored_files: int = 0  # files in source folders without an image, tar or Parquet suffix

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 3)}


class Tracker:
    """Counts rows and shards as they finish and reports `Progress`, throttled."""

    def __init__(self, callback: Callable[[Progress], None] | None, total: int | None,
                 total_shards: int | None) -> None:
        self.callback, self.total, self.total_shards = callback, total, total_shards
        self.images = self.failed = self.processed = self.shards = self.skipped = 0
        self.start = time.monotonic()
        self._last = 0.0

    def skip(self, info: ShardInfo) -> None:
        self.images += info.rows
        self.failed += info.failed
        self.shards += 1
        self.skipped += 1
        self.report()

    def rows(self, count: int, failed: int) -> None:
        self.images += count
        self.failed += failed
        self.processed += count
        self.report()

    def committed(self, info: ShardInfo | None = None) -> None:
        if info is not None:  # its rows were not counted as they ran (Ray)
            self.rows(info.rows, info.failed)
        self.shards += 1
        self.report(force=True)

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.callback is None or (not force and now - self._last < PROGRESS_EVERY_S):
            return
        self._last = now
        self.callback(Progress(self.images, self.total, self.failed, self.processed, self.shards,
                               self.total_shards, now - self.start))


def _totals(sources: Sequence[Source], shard_size: int) -> tuple[int | None, int | None]:
    """(images, shards) in the job when known before reading containers; one more walk of folders."""
    counts = [s.count() for s in sources]
    if any(c is None for c in counts):
        return None, None
    return sum(c or 0 for c in counts), sum(1 for _ in all_shards(sources, shard_size))


def run(
    model: str,
    sources: str | Sequence[str],
    output: str,
    *,
    force: bool = False,
    ray: bool = False,
    address: str | None = None,
    replicas: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    **options: Any,
) -> Summary:
    """Run an exported model over every image of some sources into a folder of Parquet shards (`vitexport batch`).

    Each row: the key (``path``; ``member`` for tar shards, ``row`` for Parquet), ``height``/``width``,
    ``top_k`` ({index, label, score}, as `predict --json`) for a model with a head, ``logits`` when asked,
    ``features`` for a features model, and ``error`` (null when the image ran). A rerun skips the shards
    already written.

    Args:
        model: an .onnx file exported by vitexport.
        sources: folders, globs, list files, images, Parquet files, tar shards (`vitexport.serving.batch.sources`).
        output: the output folder (new, empty, or this job's).
        force: start over, replacing this layout's files in ``output``.
        ray: run on a new local Ray instance.
        address: run on the Ray cluster at this address.
        replicas: Ray actors, each holding one Predictor (default: the cluster's CPUs over ``threads``).
        progress: called with a `Progress` at most every 0.1 s and after each shard.
        options: what each image gets and how it runs, by the names of `BatchOptions`'s fields (``top_k``,
            ``logits``, ``image_column``, ``shard_size``, ``provider``, ``threads``, ``workers``, ``max_batch``,
            ``run_tokens``, ``max_tokens``, ``max_memory_gb``, ``max_image_bytes``), documented there.
    """
    opts = BatchOptions.from_kwargs(options)
    _check_modes(ray, address, replicas)
    from vitexport._util.extras import require_extra

    require_extra("batch", "`vitexport batch`")
    srcs = open_sources([sources] if isinstance(sources, (str, os.PathLike)) else list(sources), opts.image_column,
                        opts.max_image_bytes)
    keys = key_columns(srcs)
    if ray or address:
        from vitexport.serving.batch.on_ray import run_on_ray

        return run_on_ray(model, srcs, output, opts, keys, force=force, address=address, replicas=replicas,
                          progress=progress)
    with Worker(model, opts, keys) as worker:
        p = worker.predictor
        out = OutputFolder(output, job_description(model, srcs, opts, keys), force)
        with out:
            tracker = Tracker(progress, *(_totals(srcs, opts.shard_size) if progress else (None, None)))
            count = run_shards(srcs, opts, out, tracker, worker.table)
        return summarize(out, tracker, count, "local", p.provider, p.provider_note, srcs)


def _check_modes(ray: bool, address: str | None, replicas: int | None) -> None:
    if ray and address:
        raise UsageError("pass --ray (a new local Ray) or --address (a running cluster), not both")
    if replicas is not None and not (ray or address):
        raise UsageError("--replicas sets the number of Ray actors; add --ray or --address")
    if replicas is not None and replicas < 1:
        raise UsageError(f"replicas must be at least 1, got {replicas}")


def job_description(model: str, sources: Sequence[Source], options: BatchOptions, keys: tuple[str, ...],
                    model_here: bool = True) -> dict[str, Any]:
    """What makes two runs the same job (their shards interchangeable): the model's bytes (its path when it is
    only on a cluster's nodes), the sources, the options that change rows."""
    if model_here and not os.path.isfile(model):
        raise ServingPathError(f"model {model!r} does not exist; pass an exported .onnx file")
    identity = {"model_sha256": file_sha256(model)} if model_here else {"model": model}
    return {**identity, "sources": source_paths(sources), "options": options.job_fields(), "columns": list(keys)}


def run_shards(sources: Sequence[Source], options: BatchOptions, out: OutputFolder, tracker: Tracker,
               table: Callable[..., Any]) -> int:
    """Run the shards not yet done, one at a time, committing each; the number of shards in the job."""
    count = 0
    for shard in all_shards(sources, options.shard_size):
        count += 1
        done = out.done(shard)
        if done is not None:
            tracker.skip(done)
            continue
        out.commit(shard, table(shard, tracker.rows))
        tracker.committed()
    return count


def summarize(out: OutputFolder, tracker: Tracker, count: int, mode: str, provider: str, note: str,
              sources: Sequence[Source]) -> Summary:
    """The summary of a finished job; shards numbered past ``count`` (left by a run over more images) removed."""
    removed = out.remove_parts_from(count)
    if removed:
        logger.info("removed %d shards past the job's %d (the sources have fewer images now)", len(removed), count)
    tracker.report(force=True)
    return Summary(str(out.folder), tracker.images, tracker.failed, tracker.processed, count, tracker.skipped,
                   time.monotonic() - tracker.start, mode, provider, note, sum(s.ignored for s in sources))


__all__ = ["Progress", "Summary", "job_description", "run", "run_shards", "summarize"]
