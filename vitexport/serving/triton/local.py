"""The ``tritonserver`` that the ``nvidia-pytriton`` wheel ships, run on 127.0.0.1 for tests and benchmarks.

The wheel carries Triton's server binary, its Python backend (with a stub per Python version) and the shared
libraries they need (``nvidia_pytriton.libs``); its ONNX Runtime backend is not included. PyTriton's own
binding layer is not used. What it takes here:

- a backend folder: the wheel's ``backends/python`` with the stub for the running Python copied in;
- ``LD_LIBRARY_PATH``: the wheel's libraries and the folder of this Python's ``libpython`` (the stub embeds it);
- the stub's Python environment: the stub runs its interpreter isolated (``PYTHONPATH`` is ignored) and finds its
  prefix by looking for ``python3`` on ``PATH``, so a small virtual environment (``pyvenv.cfg`` and a ``python3``
  link to this interpreter) is put first on ``PATH``; a ``.pth`` file in it lists vitexport's folder, then this
  environment's site-packages (``extra_paths`` go before both).

The server and its stub processes are one `ProcessTree`, bound to loopback on the ports given, and stopped by
`LocalTriton.stop`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vitexport._util.errors import EnvironmentProblem
from vitexport._util.procs import ProcessTree, free_ports

INSTALL = "pip install nvidia-pytriton"


@dataclass(frozen=True)
class TritonDist:
    """The server binary, backends, stubs and libraries of the installed ``nvidia-pytriton`` wheel."""

    root: Path  # .../pytriton/tritonserver
    libs: Path  # .../nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    def stub(self) -> Path:
        return self.root / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / \
            "triton_python_backend_stub"


def find_dist() -> TritonDist:
    """The wheel's server, or `EnvironmentProblem` saying what is missing here."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(f"the nvidia-pytriton wheel (which ships tritonserver) is not installed; {INSTALL}")
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = TritonDist(package / "tritonserver", package.parent / "nvidia_pytriton.libs")
    if not sys.platform.startswith("linux"):
        raise EnvironmentProblem("the tritonserver in nvidia-pytriton runs on Linux only")
    for path, what in ((dist.binary, "the tritonserver binary"), (dist.libs, "its libraries"),
                       (dist.stub(), f"a Python-backend stub for Python {sys.version_info[0]}.{sys.version_info[1]}")):
        if not path.exists():
            raise EnvironmentProblem(f"nvidia-pytriton has no {what} ({path}); reinstall it or use another Python")
    return dist


def libpython_dir() -> Path:
    """The folder of this interpreter's shared ``libpython`` (the stub links it), or `EnvironmentProblem`."""
    folder, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not folder or not (Path(folder) / name).exists():
        raise EnvironmentProblem(f"this Python ({sys.executable}) has no shared libpython, which Triton's Python "
                                 "backend stub embeds; use a Python built with --enable-shared")
    return Path(folder)


def prepare(work: Path, extra_paths: Sequence[str] = ()) -> dict[str, str]:
    """Backends and the stub's environment under ``work``; returns the server's environment variables."""
    dist = find_dist()
    backends = work / "backends"
    shutil.copytree(dist.root / "backends", backends, dirs_exist_ok=True)
    shutil.copy2(dist.stub(), backends / "python" / "triton_python_backend_stub")
    env_dir = work / "stub-env"
    (env_dir / "bin").mkdir(parents=True, exist_ok=True)
    python = env_dir / "bin" / "python3"
    if not python.exists():
        python.symlink_to(os.path.realpath(sys.executable))
    base = Path(os.path.realpath(sys.executable)).parent
    (env_dir / "pyvenv.cfg").write_text(f"home = {base}\ninclude-system-site-packages = false\n"
                                        f"version = {sys.version_info[0]}.{sys.version_info[1]}\n")
    packages = env_dir / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    packages.mkdir(parents=True, exist_ok=True)
    ours = str(Path(__file__).resolve().parents[3])  # the folder holding the vitexport package
    paths = [*extra_paths, ours, *site.getsitepackages()]
    (packages / "vitexport-stub.pth").write_text("".join(f"{p}\n" for p in paths))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libpython_dir()), str(dist.libs),
                                                           env.get("LD_LIBRARY_PATH")]))
    return env


@dataclass
class LocalTriton:
    """A running ``tritonserver``: its loopback addresses, process tree and log file."""

    http: str  # host:port, as tritonclient takes it
    grpc: str
    tree: ProcessTree
    log: Path

    def log_text(self, tail: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> tuple[float, int | None, list[int]]:
        """SIGTERM (Triton unloads its models), then whatever is left of the tree is killed."""
        return self.tree.stop(signal.SIGTERM, timeout)


def _wait(url: str, proc: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def start_tritonserver(repository: str | os.PathLike[str], work: str | os.PathLike[str], *,
                       extra_paths: Sequence[str] = (), args: Sequence[str] = (), ready: bool = True,
                       timeout: float = 120.0) -> LocalTriton:
    """``tritonserver --model-repository REPOSITORY`` on 127.0.0.1 (free HTTP and gRPC ports), started and
    waited for: live, and with ``ready`` every model loaded; `RuntimeError` with the log's end otherwise."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    env = prepare(work, extra_paths)
    http, grpc = free_ports(2)
    log = work / "tritonserver.log"
    command = [str(find_dist().binary), "--model-repository", str(Path(repository).resolve()),
               "--backend-directory", str(work / "backends"), "--http-address", "127.0.0.1",
               "--http-port", str(http), "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc),
               "--allow-metrics", "false", "--pinned-memory-pool-byte-size", "0", "--exit-timeout-secs", "10", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = LocalTriton(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", ProcessTree(proc), log)
    deadline = time.monotonic() + timeout
    path = "/v2/health/ready" if ready else "/v2/health/live"
    if not _wait(f"http://{server.http}{path}", proc, deadline):
        server.tree.stop(signal.SIGKILL, 10)
        raise RuntimeError(f"tritonserver did not become {'ready' if ready else 'live'} within {timeout:.0f} s "
                           f"(exit code {proc.poll()}):\n{server.log_text()}")
    server.tree.snapshot()
    return server


__all__ = ["INSTALL", "LocalTriton", "TritonDist", "find_dist", "libpython_dir", "prepare", "start_tritonserver"]
