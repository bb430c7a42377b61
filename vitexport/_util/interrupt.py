"""SIGINT, SIGTERM and SIGHUP stop a command cleanly: staging folders removed, one line, 128 + N.

Raising an exception from a signal handler (what Python does for Ctrl-C, and what this module
did for SIGTERM) is not safe in this program: the handler runs at the next bytecode, which may be
inside Python code that C++ called (a pybind11 module being imported, a torch export callback).
An exception thrown through that C++ frame aborts or crashes the process (SIGABRT/SIGSEGV seen),
and every ``finally`` above it is skipped: the staging folder of the output stays behind.

So inside `signals_as_exit` a signal does not unwind the stack. The handler ignores further
signals, removes every folder made by `scratch_folder` (the atomic writer's staging folders and
every scratch folder), prints one line and ends the process with ``os._exit(128 + N)``, the
shell's code for "killed by signal N". Nothing of the output has been moved into place at that
point: `held` delays the signal while a commit moves files, so an output is either wholly
replaced or untouched. Forked helper processes die with their parent (see `isolate`). Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_REMOVE: set[str] = set()  # folders to remove when a signal stops the command (mkdtemp names are unique)
_HELD = {"depth": 0, "pending": 0, "finishing": False}


@contextlib.contextmanager
def held(finishing: bool = False) -> Iterator[None]:
    """A signal that arrives inside the block stops the command only when the block ends: for the few
    renames of a commit (``finishing``: the output is then wholly replaced, never half) and for the
    registration of a new folder (it is then removed)."""
    _HELD["depth"] += 1
    _HELD["finishing"] = _HELD["finishing"] or finishing
    completed = False
    try:
        yield
        completed = True
    finally:
        _HELD["depth"] -= 1
        if not _HELD["depth"]:
            finished, _HELD["finishing"] = _HELD["finishing"] and completed, False
            if _HELD["pending"]:
                _stop(_HELD["pending"], committed=finished)


def _stop(signum: int, committed: bool = False) -> None:
    for folder in list(_REMOVE):
        shutil.rmtree(folder, ignore_errors=True)
    name = signal.Signals(signum).name
    what = "the output in progress was completed first" if committed else "nothing was written or replaced"
    for stream in (sys.stdout, sys.stderr, sys.__stdout__):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):  # the process's own stderr: the export redirects sys.stderr for a while
        sys.__stderr__.write(f"Error: stopped by {name}; {what}\n")
        sys.__stderr__.flush()
    os._exit(128 + signum)


@contextlib.contextmanager
def signals_as_exit(signums: tuple[int, ...] = HANDLED) -> Iterator[None]:
    """Inside the block, ``signums`` stop the process cleanly (see the module); the previous handlers
    come back after it. Outside the main thread (where Python cannot set handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        for s in signums:  # the cleanup that follows must not be cut short by a second signal
            signal.signal(s, signal.SIG_IGN)
        if _HELD["depth"]:
            _HELD["pending"] = signum
            return
        _stop(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def reset_in_child() -> None:
    """In a forked child: default dispositions again (the parent's handlers clean the parent's files)."""
    for s in HANDLED:
        signal.signal(s, signal.SIG_DFL)
    _REMOVE.clear()


@contextlib.contextmanager
def scratch_folder(prefix: str, parent: str | os.PathLike[str] | None = None, suffix: str = "") -> Iterator[Path]:
    """A new temporary folder (in ``parent``, or the system's) that is removed when the block ends, and
    by a signal that stops the command; created and registered with signals held, so none is left behind."""
    import tempfile

    with held():
        folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
        _REMOVE.add(str(folder))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _REMOVE.discard(str(folder))


__all__ = ["HANDLED", "held", "reset_in_child", "scratch_folder", "signals_as_exit"]
