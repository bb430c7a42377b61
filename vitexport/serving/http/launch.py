"""Run `vitexport serve`: a local Ray instance stopped on exit, or a deployment to a cluster (``--address``).

- Local: the model is loaded once here first, so a missing file, a model without metadata or an
  unusable provider fail in a second with a clear error, before Ray starts; ``auto`` is resolved
  here once. Then a new local Ray instance (never one found through ``RAY_ADDRESS``), Serve's HTTP
  proxy on ``host:port``, the application, and a wait for SIGINT/SIGTERM (or ``stop``), after which
  Serve and Ray are shut down (replicas finish their requests for up to 5 s). Ray Serve's own HTTP routes
  (``/-/routes``, ``/-/healthz``: no token, and the first names the model) are not exposed (`HideRayRoutes`).
- ``address``: the application is deployed to that cluster and left running there; the model
  and token paths must exist on its nodes (they are checked here when they exist here too).
- Ray's own output (its warnings, the processes it starts, its shutdown lines) goes to a log file the caller
  names (`ray_output`; `vitexport serve` prints its path), so that the terminal shows vitexport's lines only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from vitexport._util.errors import EnvironmentProblem, ServingPathError
from vitexport._util.interrupt import HANDLED as STOP_SIGNALS
from vitexport.serving.http.config import INSTALL_HINT, ServeOptions, grpc_options, with_absolute_paths

logger = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 15.0
PROXY_CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"  # Ray Serve: middlewares for its HTTP proxy
RAY_ROUTES = "/-/"  # the prefix of Ray Serve's own routes (/-/routes, /-/healthz)


@dataclass(frozen=True)
class Started:
    """Where the application answers, for the caller to show."""

    url: str
    name: str
    model: str
    provider: str
    provider_note: str = ""
    local: bool = True
    token_file: str | None = None
    grpc: str | None = None  # host:port of the gRPC endpoint, as tritonclient.grpc takes it

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.name}/infer"

    def curl_example(self) -> str:
        auth = f" -H \"Authorization: Bearer $(cat {self.token_file})\"" if self.token_file else ""
        body = ('{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], '
                '"data": ["\'"$(base64 -w0 IMAGE.png)"\'"]}], '
                '"outputs": [{"name": "logits", "parameters": {"classification": 3}}]}')
        return f"curl -s {self.infer_url}{auth} -H 'Content-Type: application/json' -d '{body}'"


def ray_modules() -> tuple[Any, Any]:
    """(ray, ray.serve), or `EnvironmentProblem` (exit 2) with the install command."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise EnvironmentProblem(f"Ray Serve is not installed ({exc}); {INSTALL_HINT}") from None
    return ray, serve


def _display_url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


def prepare_options(options: ServeOptions) -> tuple[ServeOptions, str]:
    """Options with absolute paths and (locally) ``auto`` resolved, after loading the model once here
    when it is here; returns (options, a note on the provider choice)."""
    from vitexport.serving.http.service import read_token
    from vitexport.serving.predictor import Predictor

    options, here = with_absolute_paths(options)
    app = options.app
    if app.token_file and (options.address is None or os.path.exists(app.token_file)):
        read_token(app.token_file)
    if not here:
        if options.address is None:
            raise ServingPathError(f"model {app.model!r} does not exist; pass an exported .onnx file")
        logger.warning("%s is not here; it must exist at that path on the cluster's nodes", app.model)
        return options, ""
    loaded = Predictor(app.model, provider=app.provider, max_batch=app.max_batch, max_tokens=app.max_tokens,
                       spin=False)
    if options.address is not None:  # the cluster's nodes resolve ``auto`` themselves
        return options, ""
    return replace(options, app=replace(app, provider=loaded.provider)), loaded.provider_note


def _started(options: ServeOptions, note: str, local: bool) -> Started:
    app = options.app
    grpc = _display_url(options.host, options.grpc_port).removeprefix("http://") if options.grpc_port else None
    return Started(_display_url(options.host, options.port), app.name, app.model, app.provider, note, local,
                   app.token_file, grpc)


def _deploy(serve: Any, options: ServeOptions) -> None:
    from vitexport.serving.http.app import make_app

    serve.start(http_options={"host": options.host, "port": options.port}, grpc_options=grpc_options(options),
                proxy_location="EveryNode")
    serve.run(make_app(options.app, options.scaling), name=options.app.name, route_prefix="/")


def deploy_to_cluster(options: ServeOptions, on_ready: Callable[[Started], None], log: str | None = None) -> None:
    """Deploy to the Ray cluster at ``options.address`` and leave the application running there; Ray's own
    output goes to the file ``log`` (`ray_output`)."""
    options, note = prepare_options(options)
    ray, serve = ray_modules()
    ours = _current_handlers()
    with ray_output(log) as terminal:
        ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
        _on_signals(ours)  # ray.init replaces SIGTERM's handler with one that raises SystemExit anywhere
        try:
            _deploy(serve, options)
            with contextlib.redirect_stdout(terminal[0]):  # the caller's lines: to the terminal
                on_ready(_started(options, note, local=False))
        finally:
            ray.shutdown()  # disconnects this driver; the application stays on the cluster


def serve_local(options: ServeOptions, on_ready: Callable[[Started], None],
                stop: threading.Event | None = None, log: str | None = None) -> None:
    """Serve on a new local Ray instance until ``stop`` is set or (main thread) SIGINT/SIGTERM arrives; Ray's own
    output (its warnings, the processes it starts, its shutdown lines) goes to the file ``log`` (`ray_output`)."""
    options, note = prepare_options(options)
    ray, serve = ray_modules()
    stop = stop or threading.Event()
    previous = _on_signals(lambda *_: stop.set())  # from here a signal only asks to stop: never half-started Ray
    try:
        with ray_output(log) as terminal:
            _serve_until_stopped(ray, serve, options, note, on_ready, stop, terminal[0])
    finally:
        _on_signals(previous)


def _serve_until_stopped(ray: Any, serve: Any, options: ServeOptions, note: str,
                         on_ready: Callable[[Started], None], stop: threading.Event, terminal: Any) -> None:
    saved = os.environ.pop("RAY_ADDRESS", None)  # local means a new instance, never a cluster found by the env
    try:
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, options.scaling.most),
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env=_runtime_env(options))
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
    _on_signals(lambda *_: stop.set())  # again: ray.init installs its own SIGTERM handler (sys.exit)
    try:
        if not stop.is_set():
            _deploy(serve, options)
            with contextlib.redirect_stdout(terminal):  # the caller's lines: to the terminal, not the log
                on_ready(_started(options, note, local=True))
        while not stop.wait(0.5):
            pass
    finally:
        _shutdown(ray, serve)


def _runtime_env(options: ServeOptions) -> dict[str, Any]:
    """The local Ray instance's runtime environment, which Serve's proxies inherit: Ray's own HTTP routes hidden
    (`proxy_middlewares`); for a gRPC endpoint, Serve's gRPC proxy bound to ``--host`` like HTTP (a worker setup
    hook; Ray Serve binds every interface otherwise) and refusing messages over ``--max-body-mb`` (plus framing) as
    it reads them."""
    env: dict[str, Any] = {"env_vars": {PROXY_CALLBACK_VARIABLE: f"{__name__}.proxy_middlewares"}}
    if options.grpc_port is None:
        return env
    from vitexport.serving.grpc.methods import HOST_VARIABLE

    env["worker_process_setup_hook"] = "vitexport.serving.grpc.methods.bind_grpc_host"
    env["env_vars"].update({HOST_VARIABLE: options.host,
                            "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(options.app.max_body_bytes + 2**20)})
    return env


class HideRayRoutes:
    """ASGI middleware in front of Ray Serve's HTTP proxy: Ray's own routes (``/-/routes`` names every application,
    ``/-/healthz``; the proxy answers them itself, before any replica could ask for the token) get a 404 like any
    unknown path. ``/v2/health/live`` and ``/ready`` are this server's health checks."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and str(scope.get("path", "")).startswith(RAY_ROUTES):
            body = json.dumps({"error": "no such endpoint; the server's health checks are /v2/health/live and "
                                        "/v2/health/ready"}).encode()
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def proxy_middlewares() -> list[Any]:
    """Ray Serve's HTTP proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, set for the local Ray
    instance): the middlewares it wraps itself in."""
    from starlette.middleware import Middleware

    return [Middleware(HideRayRoutes)]


def _on_signals(handler: Any) -> Any:
    """Install ``handler`` (or a dict of handlers) for SIGINT, SIGTERM and SIGHUP in the main thread; returns the
    old ones."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    handlers = handler if isinstance(handler, dict) else {sig: handler for sig in STOP_SIGNALS}
    return {sig: signal.signal(sig, h) for sig, h in handlers.items()}


def _current_handlers() -> dict[int, Any] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return {sig: h for sig in STOP_SIGNALS if (h := signal.getsignal(sig)) is not None}


def _shutdown(ray: Any, serve: Any) -> None:
    """Serve first (replicas finish in-flight requests), bounded in time; then the local Ray processes."""
    _on_signals(lambda *_: logger.warning("already shutting down"))
    worker = threading.Thread(target=serve.shutdown, name="serve-shutdown", daemon=True)
    worker.start()
    worker.join(SHUTDOWN_TIMEOUT_S)
    if worker.is_alive():
        logger.warning("Serve did not shut down within %.0f s; stopping Ray anyway", SHUTDOWN_TIMEOUT_S)
    ray.shutdown()


@contextlib.contextmanager
def ray_output(log: str | None) -> Iterator[tuple[Any, Any]]:
    """While Ray runs in this process: what writes to file descriptors 1 and 2 goes to the file ``log`` instead:
    Ray's C++ core (the token-authentication warning), the processes it starts, and its Python side, whose loggers
    and whose prints of errors from its processes (coloured "(raylet) ..." lines, at shutdown too) write to
    ``sys.stdout``/``sys.stderr``. Yields (stdout, stderr) streams to the original descriptors for vitexport's own
    lines; the root logger's handlers on those descriptors (vitexport's warnings: Ray's loggers do not propagate
    there) are moved onto them for the time. ``None``: nothing is moved (``--verbose``)."""
    if log is None:
        yield sys.stdout, sys.stderr
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    streams = {1: sys.stdout, 2: sys.stderr}
    moved: dict[int, Any] = {}
    handlers: list[tuple[logging.StreamHandler, Any]] = []
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        for fd, stream in streams.items():
            if _fileno(stream) == fd:  # a real descriptor (not a test runner's buffer): a copy of the original
                moved[fd] = open(os.dup(saved[fd]), "w", buffering=1, encoding=getattr(stream, "encoding", None),
                                 errors=getattr(stream, "errors", None))
        for handler in logging.getLogger().handlers:
            fd = _fileno(getattr(handler, "stream", None))
            if isinstance(handler, logging.StreamHandler) and fd in moved:
                handlers.append((handler, handler.setStream(moved[fd])))
        for fd in (1, 2):
            os.dup2(target, fd)
        yield moved.get(1, streams[1]), moved.get(2, streams[2])
    finally:
        for stream in (*streams.values(), *moved.values()):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        os.close(target)
        for handler, stream in handlers:
            handler.setStream(stream)
        for stream in moved.values():
            stream.close()


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


__all__ = ["HideRayRoutes", "Started", "deploy_to_cluster", "prepare_options", "proxy_middlewares", "ray_modules",
           "ray_output", "serve_local"]
