"""`vitexport serve` in a background process on 127.0.0.1: started, waited for, its Serve replicas found.

For tests and benchmarks that drive a real server; the process tree is tracked (`vitexport._util.procs`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from vitexport._util.procs import ProcessTree, free_ports

VITEXPORT = [sys.executable, "-c", "from vitexport.cli import main; main()"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a background server: this process's, without an inherited Ray address."""
    out = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out.update(extra)
    return out


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


def start_server(model: Path, *args: str, port: int | None = None, cwd: Path | None = None) -> tuple[str, ProcessTree]:
    """`vitexport serve MODEL ARGS` on 127.0.0.1 and a free port, ready; (base URL, process tree)."""
    port = port or free_ports()[0]
    proc = subprocess.Popen([*VITEXPORT, "serve", str(model), "--port", str(port), *args], cwd=cwd, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    tree = ProcessTree(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
    except BaseException:
        tree.stop(signal.SIGKILL)
        raise
    tree.snapshot()
    return url, tree


def titled_pids(tree: ProcessTree, prefix: str) -> list[int]:
    """The living processes of ``tree`` whose title (Ray names its workers ``ray::...``) starts with ``prefix``."""
    pids = []
    for pid in tree.snapshot():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(prefix.encode()):
            pids.append(pid)
    return pids


def replica_pids(tree: ProcessTree, app: str) -> list[int]:
    """The living Serve replicas of ``app`` (Ray titles their processes ``ray::ServeReplica:APP:DEPLOYMENT``)."""
    return titled_pids(tree, f"ray::ServeReplica:{app}:")


def wait_replicas(tree: ProcessTree, app: str, count: int, timeout: float = 60.0) -> list[int]:
    """The replica PIDs once ``count`` are running (a replica's process takes its title only when its actor
    starts, which can be after the server first answers); whatever is there after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(pids := replica_pids(tree, app)) != count and time.monotonic() < deadline:
        time.sleep(0.2)
    return pids
