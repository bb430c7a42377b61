"""Forked-child work (`vitexport.security.isolate`): whatever the child does (crash, hang, exhaust memory, exit),
the parent gets one line, in bounded time, and stays unharmed."""

from __future__ import annotations

import ctypes
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from vitexport._util.errors import ConfigError, IsolationError
from vitexport.security import isolate

GB = 1 << 30


def crash() -> None:
    ctypes.string_at(0)  # SIGSEGV


def hang() -> None:
    while True:
        pass


def exhaust_memory() -> int:
    return len(bytearray(2 * GB))


def exit_early() -> None:
    os._exit(3)


def raise_unexpected() -> None:
    raise ValueError("bad\nvalue")


@pytest.mark.parametrize("fn, timeout_s, memory_bytes, pattern", [
    (crash, 30, GB, r"crashed \(SIGSEGV\); the file is crafted or corrupt"),
    (hang, 1, GB, "did not finish in 1 s and was stopped"),
    (exhaust_memory, 30, GB // 2, r"needs more than the 0\.5 GB allowed for it"),
    (exit_early, 30, GB, r"ended unexpectedly \(exit status 3\)"),
    (raise_unexpected, 30, GB, "failed: ValueError: bad value"),
], ids=["crash", "hang", "memory", "exit", "exception"])
def test_a_child_that_crashes_hangs_or_blows_up_is_one_line(fn, timeout_s: float, memory_bytes: int,
                                                             pattern: str) -> None:
    start = time.monotonic()
    with pytest.raises(IsolationError, match=pattern) as info:
        isolate.call(fn, "reading 'x'", timeout_s=timeout_s, memory_bytes=memory_bytes)
    assert str(info.value).startswith("reading 'x'") and "\n" not in str(info.value)
    assert time.monotonic() - start < timeout_s + 20
    assert isolate.call(lambda: os.getpid(), "x", 30, GB) != os.getpid()  # the parent is unharmed, forks again


def test_results_and_our_errors_come_back_as_they_were() -> None:
    assert isolate.call(lambda: {"ok": [1, 2]}, "x", 30, GB) == {"ok": [1, 2]}
    with pytest.raises(ConfigError, match="keeps its class"):  # an error raised on purpose keeps its class
        isolate.call(lambda: (_ for _ in ()).throw(ConfigError("keeps its class")), "x", 30, GB)


def test_isolation_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """VITEXPORT_ISOLATE=0: applications that cannot fork run the work in-process, behind the pre-scans."""
    monkeypatch.setenv("VITEXPORT_ISOLATE", "0")
    assert not isolate.enabled()
    assert isolate.call(lambda: os.getpid(), "x", 30, GB) == os.getpid()


def test_a_worker_answers_many_requests_then_reports_its_death() -> None:
    def handler(header: dict, arrays: dict) -> tuple[dict, dict]:
        if header.get("op") == "crash":
            crash()
        return {"sum": float(arrays["x"].sum())}, {"y": arrays["x"] * 2}

    worker = isolate.Worker(handler, "running 'm.ts'", GB)
    try:
        for n in (1, 5, 1000):
            reply, out = worker.request({"op": "run"}, {"x": np.arange(n, dtype=np.float32)}, timeout_s=30)
            assert reply["sum"] == n * (n - 1) / 2 and np.array_equal(out["y"], np.arange(n) * 2)
        with pytest.raises(IsolationError, match=r"running 'm.ts' crashed \(SIGSEGV\)"):
            worker.request({"op": "crash"}, timeout_s=30)
    finally:
        worker.close(kill=True)
        worker.close(kill=True)  # twice is safe


def _try(fn) -> str:
    try:
        fn()
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)
    return "done"


def test_a_confined_child_cannot_write_files(tmp_path) -> None:
    """Issue 22: the child that runs admitted TorchScript inherits no writable file descriptor but its pipes, cannot
    grow any file (RLIMIT_FSIZE 0), and has no working directory to create files in. Root can still open an
    existing file by its absolute path without Landlock; nothing it writes through write(2) lands."""
    inherited = open(tmp_path / "parent-log.txt", "wb")  # the parent holds a file open for writing
    target = tmp_path / "absolute.bin"

    def handler(header: dict, arrays: dict) -> tuple[dict, dict]:
        def write_absolute() -> None:
            with open(target, "wb") as fh:
                fh.write(b"x" * 64)

        def write_inherited() -> None:
            os.write(inherited.fileno(), b"x" * 64)

        return {"relative": _try(lambda: open("relative.txt", "wb").close()), "absolute": _try(write_absolute),
                "inherited": _try(write_inherited), "cwd": _try(os.getcwd)}, {}

    worker = isolate.Worker(handler, "probe", 0, confined=True)
    try:
        reply, _ = worker.request({"op": "probe"})
    finally:
        worker.close()
    inherited.close()
    assert reply["relative"] != "done" and reply["inherited"] == os.strerror(9), reply  # EBADF: closed
    assert reply["absolute"] != "done", reply  # File too large (EFBIG), or refused by Landlock
    assert not target.exists() or target.stat().st_size == 0
    assert (tmp_path / "parent-log.txt").stat().st_size == 0
    assert not list(tmp_path.glob("relative.txt"))
    assert not list(Path(tempfile.gettempdir()).glob("vitexport-confined-*"))


def test_confinement_reports_what_holds() -> None:
    def handler(header: dict, arrays: dict) -> tuple[dict, dict]:
        import resource

        return {"fsize": resource.getrlimit(resource.RLIMIT_FSIZE), "fds": sorted(os.listdir("/proc/self/fd"))}, {}

    worker = isolate.Worker(handler, "probe", 0, confined=True)
    try:
        reply, _ = worker.request({"op": "probe"})
    finally:
        worker.close()
    assert reply["fsize"] == [0, 0]
    assert len(reply["fds"]) <= 6, reply  # 0, 1, 2, the two pipes (and the listing's own)
