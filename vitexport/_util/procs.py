"""Process trees that never outlive their starter: every descendant is tracked by PID and start time (from /proc)
and killed at the end if it is still the same process; nothing is killed by name. Free loopback ports.

Linux only (/proc); used to run `vitexport serve`, Ray and Triton servers in the background (tests, benchmarks).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

_TRACKED: list[subprocess.Popen] = []


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


class ProcessTree:
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
