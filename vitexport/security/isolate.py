"""Run risky work on untrusted files in a forked child with a memory limit and a timeout.

Pre-scans (`vitexport.security.picklescan`, `vitexport.security.torchscript_policy`) refuse every input we know
to be hostile; this is the defence in depth behind them. Whatever crashes (SIGSEGV in C code),
hangs (a hash that never returns, a loop) or exhausts memory does so in a child process, and
the parent turns it into one line: "... crashed (SIGSEGV)", "... did not finish in 60 s",
"... needs more than 2.0 GB". The parent never unpickles anything the child sends: replies are
JSON and ``.npy`` arrays read with ``allow_pickle=False``.

- `call` runs one function in a child and returns its JSON-able result.
- `Worker` keeps a child alive and answers requests (load a TorchScript archive once, then run
  it on many inputs).

The child is made with ``os.fork``: it shares the parent's imported modules (no second
``import torch``; a fork costs ~40 ms), gets an address-space limit of the parent's size plus
a budget, no core dumps and default signal handlers, and runs torch single-threaded (GNU
OpenMP's thread pool does not survive ``fork``: the child's first parallel op would hang).
Where ``fork`` does not exist (Windows), or with ``VITEXPORT_ISOLATE=0`` (an embedding
application whose other threads could hold locks at fork time), the work runs in-process,
behind the pre-scans only.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from vitexport._util import errors
from vitexport._util.errors import IsolationError, VitexportError

MAX_FRAME = 16 * 1024**3  # what the parent accepts from a child in one message
_HEADER = struct.Struct("<Q")


def enabled() -> bool:
    """Whether work is isolated in a child here (fork exists and VITEXPORT_ISOLATE is not 0)."""
    return hasattr(os, "fork") and os.environ.get("VITEXPORT_ISOLATE", "1") != "0"


def _vm_bytes() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------
# framing: JSON headers and .npy arrays
# ---------------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _send(fd: int, header: dict[str, Any], arrays: dict[str, Any] | None = None) -> None:
    import numpy as np

    arrays = arrays or {}
    body = json.dumps({**header, "arrays": list(arrays)}).encode()
    parts = [_HEADER.pack(len(body)), body]
    for value in arrays.values():
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
        parts += [_HEADER.pack(buf.tell()), buf.getvalue()]
    _write_all(fd, b"".join(parts))


class _Reader:
    """Reads frames from a child's pipe, each read bounded by a deadline."""

    def __init__(self, fd: int, what: str, pid: int) -> None:
        self.fd, self.what, self.pid = fd, what, pid

    def exact(self, n: int, deadline: float) -> bytes:
        chunks, left = [], n
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self.fd], [], [], wait)[0]:
                raise TimeoutError
            chunk = os.read(self.fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def frame(self, deadline: float) -> tuple[dict[str, Any], dict[str, Any]]:
        import numpy as np

        size = _HEADER.unpack(self.exact(_HEADER.size, deadline))[0]
        if size > MAX_FRAME:
            raise EOFError
        header = json.loads(self.exact(size, deadline))
        arrays = {}
        for name in header.get("arrays", []):
            n = _HEADER.unpack(self.exact(_HEADER.size, deadline))[0]
            if n > MAX_FRAME:
                raise EOFError
            arrays[name] = np.load(io.BytesIO(self.exact(n, deadline)), allow_pickle=False)
        return header, arrays


# ---------------------------------------------------------------------------
# the child
# ---------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: the kernel kills the child when the parent dies (a parent killed with SIGKILL leaves no
    orphan spinning on a hostile file). Elsewhere a no-op."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child_main(handler: Callable[[dict, dict], tuple[dict, dict]], requests: int, replies: int,
                memory_bytes: int, first: bool) -> None:
    """Runs in the forked child: answer requests until the parent closes the pipe; never returns."""
    import resource

    from vitexport._util.interrupt import reset_in_child

    code = 0
    try:
        reset_in_child()
        _die_with_parent()
        faulthandler.disable()  # a crash is reported by the parent, in one line, not as a C-level traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the child reports through its pipe only: no warnings or prints on the terminal
        os.dup2(devnull, 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not leave a core file behind
        if "torch" in sys.modules:  # the parent's OpenMP pool does not survive fork: a parallel op would hang
            sys.modules["torch"].set_num_threads(1)
        if memory_bytes:
            limit = _vm_bytes() + memory_bytes
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        reader = _Reader(requests, "parent", os.getppid())
        while True:
            if first:
                header, arrays, first = {"op": "call"}, {}, False
            else:
                try:
                    header, arrays = reader.frame(time.monotonic() + 10 * 365 * 86400)
                except EOFError:
                    break
            try:
                reply, out = handler(header, arrays)
                _send(replies, {"ok": True, **reply}, out)
            except MemoryError:
                _send(replies, {"ok": False, "memory": True})
            except VitexportError as exc:
                _send(replies, {"ok": False, "class": type(exc).__name__, "message": str(exc)})
            except Exception as exc:
                _send(replies, {"ok": False, "class": "", "message": f"{type(exc).__name__}: {exc}"[:2000]})
    except BaseException:  # nothing may escape a forked child
        code = 70
    finally:
        os._exit(code)


def _rebuild_error(header: dict[str, Any], what: str, memory_bytes: int) -> VitexportError:
    if header.get("memory"):
        return IsolationError(f"{what} needs more than the {memory_bytes / 1e9:.1f} GB allowed for it; "
                              "the file is crafted or far larger than it claims")
    cls = getattr(errors, header.get("class") or "", None)
    if isinstance(cls, type) and issubclass(cls, VitexportError):
        return cls(header["message"])
    return IsolationError(f"{what} failed: {' '.join(str(header.get('message')).split())[:300]}")


class Worker:
    """A forked child answering ``handler(header, arrays) -> (header, arrays)`` requests, with limits."""

    def __init__(self, handler: Callable[[dict, dict], tuple[dict, dict]], what: str, memory_bytes: int,
                 one_shot: bool = False) -> None:
        self.what, self.memory_bytes = what, memory_bytes
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            os.close(req_w)
            os.close(rep_r)
            _child_main(handler, req_r, rep_w, memory_bytes, one_shot)
        os.close(req_r)
        os.close(rep_w)
        self.pid, self.requests = pid, req_w
        self.reader = _Reader(rep_r, what, pid)

    def request(self, header: dict[str, Any], arrays: dict[str, Any] | None = None,
                timeout_s: float = 60.0) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send one request and wait for the reply; `IsolationError` if the child crashes or times out."""
        with contextlib.suppress(OSError):  # a child that is gone: its exit status says why, below
            _send(self.requests, header, arrays)
        return self.reply(timeout_s)

    def reply(self, timeout_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait for the child's next reply (the answer of a one-shot worker, or of `request`)."""
        try:
            reply, out = self.reader.frame(time.monotonic() + timeout_s)
        except TimeoutError:
            self.close(kill=True)
            raise IsolationError(f"{self.what} did not finish in {timeout_s:.0f} s and was stopped; "
                                 "the file is crafted or far larger than it claims") from None
        except (EOFError, ValueError, OSError):
            raise IsolationError(f"{self.what} {self._death()}; the file is crafted or corrupt") from None
        if not reply.get("ok"):
            raise _rebuild_error(reply, self.what, self.memory_bytes)
        return reply, out

    def _death(self) -> str:
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(self.pid, 0)
            self.pid = 0
            if os.WIFSIGNALED(status):
                return f"crashed ({signal.Signals(os.WTERMSIG(status)).name})"
            return f"ended unexpectedly (exit status {os.WEXITSTATUS(status)})"
        return "ended unexpectedly"

    def close(self, kill: bool = False) -> None:
        """Close the pipes, end the child (SIGKILL with ``kill``) and reap it; safe to call twice."""
        reader = getattr(self, "reader", None)
        for fd in (getattr(self, "requests", -1), reader.fd if reader is not None else -1):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.requests = -1
        if reader is not None:
            reader.fd = -1
        if getattr(self, "pid", 0):
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0

    def __del__(self) -> None:
        self.close(kill=True)


def call(fn: Callable[[], Any], what: str, timeout_s: float, memory_bytes: int) -> Any:
    """``fn()`` in a forked child with ``memory_bytes`` more address space than the parent has and
    ``timeout_s`` to finish; its JSON-able result. In-process when isolation is not `enabled`."""
    if not enabled():
        return fn()

    def handler(header: dict, arrays: dict) -> tuple[dict, dict]:
        return {"result": fn()}, {}

    worker = Worker(handler, what, memory_bytes, one_shot=True)
    try:
        reply, _ = worker.reply(timeout_s)
    finally:
        worker.close(kill=True)
    return reply["result"]


__all__ = ["IsolationError", "Worker", "call", "enabled"]
