"""Helpers for the serve tests: free loopback ports, `vitexport serve` in a subprocess, process trees that
never outlive the tests (every process a test starts is tracked by PID and start time, and killed at the end
if it is still there; nothing is killed by name)."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
VITEXPORT = [sys.executable, "-c", "from vitexport.cli import main; main()"]
_TRACKED: list[subprocess.Popen] = []



def require_ray() -> None:
    """Skip the calling test module without Ray Serve, tritonclient or /proc (where Ray's processes are tracked)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'vitexport[serve]')")
    pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install 'vitexport[serve]')")
    if not sys.platform.startswith("linux"):
        pytest.skip("the serve tests track Ray's processes through /proc (Linux only)", allow_module_level=True)


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def env(**extra: str) -> dict[str, str]:
    """The test environment for subprocesses: this checkout first on the path, no inherited Ray address."""
    out = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    out.update(extra)
    return out


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of every living descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if (start := _start_time(p)) is not None:
            out[p] = start
        todo.extend(children.get(p, []))
    return out


def kill_tracked(pids: dict[int, str]) -> list[int]:
    """SIGKILL the processes of ``pids`` that are still the same processes; returns those it killed."""
    killed = []
    for pid, start in pids.items():
        if _start_time(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


class Tree:
    """A started process and every descendant it ever had (refreshed on `snapshot`)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.known: dict[int, str] = {}
        _TRACKED.append(proc)
        self.snapshot()

    def snapshot(self) -> dict[int, str]:
        if self.proc.poll() is None:
            self.known.update(descendants(self.proc.pid))
        return self.known

    def alive(self) -> list[int]:
        return [p for p, s in self.known.items() if _start_time(p) == s]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> tuple[float, int | None, list[int]]:
        """Send ``sig``; (seconds until the process exited, its exit code, descendants left and then killed)."""
        self.snapshot()
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        seconds = time.monotonic() - start
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = self.alive()
        kill_tracked(self.known)
        return seconds, self.proc.returncode, left


@atexit.register
def _kill_leftovers() -> None:  # a crashed test session never leaves a server behind
    for proc in _TRACKED:
        if proc.poll() is None:
            tree = descendants(proc.pid)
            proc.kill()
            kill_tracked(tree)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the server exited ({proc.returncode}):\n{out}\n{err}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} not ready within {timeout} s")


def start_server(model: Path, *args: str, port: int | None = None, cwd: Path | None = None) -> tuple[str, Tree]:
    """`vitexport serve MODEL ARGS` on 127.0.0.1 and a free port, ready; (base URL, process tree)."""
    port = port or free_ports()[0]
    proc = subprocess.Popen([*VITEXPORT, "serve", str(model), "--port", str(port), *args], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    tree = Tree(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
    except BaseException:
        tree.stop(signal.SIGKILL)
        raise
    tree.snapshot()
    return url, tree


def replica_pids(tree: Tree, app: str) -> list[int]:
    """The living Serve replicas of ``app`` (Ray titles their processes ``ray::ServeReplica:APP:DEPLOYMENT``)."""
    pids = []
    for pid in tree.snapshot():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(f"ray::ServeReplica:{app}:".encode()):
            pids.append(pid)
    return pids


def wait_replicas(tree: Tree, app: str, count: int, timeout: float = 60.0) -> list[int]:
    """The replica PIDs once ``count`` are running (a replica's process takes its title only when its actor
    starts, which can be after the server first answers); whatever is there after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(pids := replica_pids(tree, app)) != count and time.monotonic() < deadline:
        time.sleep(0.2)
    return pids


def png_bytes(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
