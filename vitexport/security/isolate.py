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
CONFINEMENT: dict[str, bool] = {}  # in a confined child: which of `confine`'s lines hold
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


def _landlock_no_writes() -> bool:
    """Linux 5.13+ with Landlock enabled: from now on this process (and what it starts) may not open a file for
    writing, truncate one, or create, remove, rename or link anything, anywhere, root or not (file descriptors
    already open are unaffected). False where the kernel offers no Landlock (then only `confine`'s other lines
    hold)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # landlock_create_ruleset: ABI
        if abi < 1:
            return False
        # WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK,
        # MAKE_SYM; REFER (ABI 2), TRUNCATE (ABI 3). Handled and never allowed: a ruleset without rules.
        access = sum(1 << bit for bit in (1, *range(4, 13)))
        access |= (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)
        attr = ctypes.c_uint64(access)
        fd = libc.syscall(444, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
        if fd < 0:
            return False
        try:
            zero = ctypes.c_ulong(0)
            if libc.prctl(38, ctypes.c_ulong(1), zero, zero, zero) != 0:  # PR_SET_NO_NEW_PRIVS (for Landlock)
                return False
            return libc.syscall(446, fd, ctypes.c_uint32(0)) == 0  # landlock_restrict_self
        finally:
            os.close(fd)
    except (OSError, AttributeError, ValueError):
        return False


# seccomp: per architecture (audit arch, open(2) or None, openat(2), the system calls refused outright)
_SECCOMP_ARCHES = {
    "x86_64": (0xC000003E, 2, 257, (
        85, 437, 76, 77, 82, 264, 316, 87, 263, 83, 258, 84, 86, 265, 88, 266, 133, 259,  # create, truncate,
        90, 91, 268, 452, 92, 93, 94, 260, 285, 303, 304, 188, 189, 190, 197, 198, 199,  # rename, remove, link,
        165, 166, 425, 426, 427, 101, 311)),  # mode, owner, xattrs, mount, io_uring, ptrace, process_vm_writev
    "aarch64": (0xC00000B7, None, 56, (
        437, 45, 46, 38, 276, 35, 34, 37, 36, 33, 52, 53, 452, 54, 55, 47, 264, 265, 5, 6, 7, 14, 15, 16,
        40, 39, 425, 426, 427, 117, 271)),
}
_O_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC  # O_TMPFILE needs O_WRONLY or O_RDWR


def _seccomp_no_writes() -> bool:
    """Linux x86-64 and arm64: a seccomp filter (classic BPF, installed with prctl) makes every system call that
    opens a file for writing (open/openat with O_WRONLY, O_RDWR, O_CREAT, O_TRUNC; openat2, creat,
    open_by_handle_at) or creates, truncates, renames, removes, links, chmods or chowns a file, mounts, or reaches
    another process (ptrace, process_vm_writev, io_uring) fail with EPERM, root included. False where it cannot be
    installed."""
    import ctypes
    import platform
    import struct as st

    arch = _SECCOMP_ARCHES.get(platform.machine())
    if arch is None:
        return False
    audit, open_nr, openat_nr, refused = arch
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    allow, eperm, kill = 0x7FFF0000, 0x00050000 | 1, 0x80000000  # RET_ALLOW, RET_ERRNO|EPERM, RET_KILL_PROCESS
    head = [(ld, 0, 0, 4), (jeq, 1, 0, audit), (ret, 0, 0, kill), (ld, 0, 0, 0)]  # arch, then the call's number
    if audit == 0xC000003E:
        head += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]  # the x32 ABI's numbers: refused
    body: list[tuple[int, int, int, int]] = []
    for nr, arg in ((open_nr, 1), (openat_nr, 2)):  # open(path, flags), openat(dirfd, path, flags)
        if nr is not None:
            body += [(jeq, 0, 4, nr), (ld, 0, 0, 16 + 8 * arg), (jset, 0, 1, _O_WRITE), (ret, 0, 0, eperm),
                     (ld, 0, 0, 0)]
    body.append((ret, 0, 0, allow))
    n = len(refused)  # each refused number jumps over the rest of the list and `body` to the final EPERM
    listed = [(jeq, n - 1 - i + len(body), 0, nr) for i, nr in enumerate(refused)]
    prog = head + listed + body + [(ret, 0, 0, eperm)]
    raw = b"".join(st.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _Prog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    zero = ctypes.c_ulong(0)
    if libc.prctl(38, ctypes.c_ulong(1), zero, zero, zero) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(fprog), zero, zero) == 0  # PR_SET_SECCOMP, MODE_FILTER


def confine(keep: tuple[int, ...]) -> dict[str, bool]:
    """In a forked child, before it touches a file it did not write: take away what writing files needs.

    - every file descriptor but ``keep`` (its pipes) is closed; 0, 1 and 2 are ``/dev/null`` (read-only for 0);
    - ``RLIMIT_FSIZE`` is 0 (SIGXFSZ ignored): no write may grow a regular file, so a created file stays empty and
      a write to one fails (EFBIG);
    - the working directory is a folder that no longer exists: nothing can be created by a relative path;
    - the umask is 0o777;
    - Linux x86-64 and arm64: a seccomp filter (`_seccomp_no_writes`) refuses every system call that opens a file
      for writing, creates, truncates, renames or removes one, root included; so ``torch.from_file(path, True,
      n)`` cannot open an existing file to map it shared;
    - where the kernel has Landlock (`_landlock_no_writes`), the same again at the file-system level.

    Without the seccomp filter and Landlock (another OS or architecture, a kernel without them), a process
    running as root can still open an existing file by its absolute path for writing, truncate it, remove or
    rename it, create empty files, and write a file through a shared mapping (``torch.from_file(path, True,
    n)`` on a file of at least n bytes): ``RLIMIT_FSIZE`` stops growth, not those. Nothing here stops code from
    reading files, using the network or burning CPU within the limits. The real defence is not running foreign
    code: TorchScript is admitted only when it is our exporter's (`vitexport.security.torchscript_policy`).
    Returns which lines hold."""
    import resource
    import tempfile

    done = {"fds": False, "fsize": False, "cwd": False, "landlock": False, "seccomp": False}
    null_in, null_out = os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null_in, 0)
    os.dup2(null_out, 1)
    os.dup2(null_out, 2)
    try:
        open_fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except (OSError, ValueError):
        open_fds = list(range(3, max(os.sysconf("SC_OPEN_MAX"), null_out + 1)))
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    done["fds"] = True
    with contextlib.suppress(OSError, ValueError):
        folder = tempfile.mkdtemp(prefix="vitexport-confined-")
        os.chdir(folder)
        os.rmdir(folder)
        done["cwd"] = True
    os.umask(0o777)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    done["fsize"] = True
    done["landlock"] = _landlock_no_writes()
    try:
        done["seccomp"] = _seccomp_no_writes()
    except (OSError, AttributeError, ValueError):
        done["seccomp"] = False
    return done


def _child_main(handler: Callable[[dict, dict], tuple[dict, dict]], requests: int, replies: int,
                memory_bytes: int, first: bool, confined: bool = False) -> None:
    """Runs in the forked child: answer requests until the parent closes the pipe; never returns."""
    import resource

    from vitexport._util.interrupt import reset_in_child

    code = 0
    try:
        reset_in_child()
        _die_with_parent()
        faulthandler.disable()  # a crash is reported by the parent, in one line, not as a C-level traceback
        if confined:
            import fcntl

            requests, replies = (fcntl.fcntl(fd, fcntl.F_DUPFD, 3) if fd <= 2 else fd for fd in (requests, replies))
            CONFINEMENT.update(confine((requests, replies)))
        else:
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
                 one_shot: bool = False, confined: bool = False) -> None:
        """``confined``: the child cannot write files (`confine`) before it handles anything."""
        self.what, self.memory_bytes = what, memory_bytes
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            os.close(req_w)
            os.close(rep_r)
            _child_main(handler, req_r, rep_w, memory_bytes, one_shot, confined)
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


__all__ = ["IsolationError", "Worker", "call", "confine", "enabled"]
