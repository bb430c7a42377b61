"""SIGTERM and SIGHUP end a command the way Ctrl-C does: by an exception, so every cleanup runs.

Python turns SIGINT into `KeyboardInterrupt`, which unwinds the stack: the atomic writer's
``finally`` removes its staging folder and nothing half-written stays behind. SIGTERM (the
default of ``kill``, ``timeout`` and CI cancellations) and SIGHUP (a closed terminal) would
instead end the process on the spot. Inside `signals_as_exit` they raise `Terminated`, a
`SystemExit` with the shell's code for "killed by signal N" (128 + N), which unwinds the same
way; a second signal during the cleanup is ignored (SIGKILL still ends it). Torch-free.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

HANDLED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM or SIGHUP arrives inside `signals_as_exit`."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


@contextlib.contextmanager
def signals_as_exit(signums: tuple[int, ...] = HANDLED) -> Iterator[None]:
    """Inside the block, ``signums`` raise `Terminated`; the previous handlers come back after it.
    Outside the main thread (where Python cannot set handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        for s in signums:  # the cleanup that follows must not be cut short by a second signal
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def reset_in_child() -> None:
    """In a forked child: default dispositions again (the parent's handlers raise into its own stack)."""
    for s in (*HANDLED, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)


__all__ = ["HANDLED", "Terminated", "reset_in_child", "signals_as_exit"]
