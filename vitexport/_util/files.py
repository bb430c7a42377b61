"""The one way vitexport writes files: staged beside the output, moved into place only on success.

Every writer (exports, checkpoints, optimized and quantized graphs, verify reports,
heatmaps) goes through `staged_output`, directly or through `atomic_file`. Nothing
here imports torch or onnxruntime.

- `check_output` refuses an output before slow work starts: an existing file without
  ``force`` (`OutputExistsError`, exit 2), a directory (exit 2), a missing folder (exit 1).
  ``force`` replaces regular files only: a device, FIFO or socket (``/dev/null``), a
  symbolic link (whose target may lie anywhere) and any of the command's own ``inputs``
  (the same file by `os.path.samefile`, hard links included) are refused even with it.
- A write that fails because the disk is full (or a file-size or quota limit is hit) is an
  `OutputError` saying so; torch's C++ writers report it only as "file write failed", so
  the free space of the output's filesystem is what tells.
- `staged_output` gives a temporary folder beside the output (same filesystem, so the
  final move is an atomic rename). ``commit()`` moves data files first and the output
  file last, so a reader never sees a model whose external data is not there yet.
  Without a commit, or on any error, the folder is removed and an existing output is
  left untouched. A stopping signal (SIGINT/SIGTERM/SIGHUP in the CLI) removes the folder too and
  waits for a commit's renames to end (`vitexport._util.interrupt`).
- `atomic_file` is the single-file case: it yields the temporary path to write.
- `staged_folder` is the folder case (a Triton model folder): written whole beside the target, then renamed
  into place; an old folder is replaced only with ``force``, by two renames (never a half-written folder).

Files are created inside the staging folder by ordinary ``open()`` calls, so they get
the permissions of any file the user writes (0666 minus the umask), not ``mkstemp``'s
0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from vitexport._util.errors import OutputError, OutputExistsError, OutputPathError, VitexportError
from vitexport._util.interrupt import held, scratch_folder

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LOW_SPACE_BYTES = 1 << 20  # a write failed and less than this is free: the disk is full


def _special_kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def refuse_replacing(out: Path) -> None:
    """Refuse what `--force` must never replace: a symbolic link, a device, FIFO or socket, a directory."""
    try:
        info = os.lstat(out)
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a missing folder is reported later)
        return
    except OSError as exc:
        raise OutputError(f"output {str(out)!r} cannot be checked ({exc.strerror}); choose another path") from exc
    if stat.S_ISLNK(info.st_mode):
        raise OutputExistsError(
            f"output {str(out)!r} is a symbolic link (to {os.readlink(out)!r}); vitexport never writes through "
            "or replaces links: pass the path of a regular file"
        )
    if stat.S_ISDIR(info.st_mode):
        raise OutputExistsError(f"output {str(out)!r} is a directory; pass a file path with -o")
    if not stat.S_ISREG(info.st_mode):
        raise OutputExistsError(
            f"output {str(out)!r} is {_special_kind(info.st_mode)}; --force replaces regular files only: "
            "pass the path of a regular file"
        )


def refuse_inputs(out: str | os.PathLike[str], inputs: tuple[str | os.PathLike[str] | None, ...]) -> None:
    """Refuse an output that is one of ``inputs`` (the same file by `os.path.samefile`, hard links included)."""
    for source in inputs:
        if source is None:
            continue
        with contextlib.suppress(OSError):  # a missing input is reported by whoever reads it
            if os.path.samefile(out, source):
                raise OutputExistsError(
                    f"output {str(out)!r} is the input {str(source)!r} of this command; choose another output path"
                )


def check_output(path: str | os.PathLike[str], force: bool = False,
                 inputs: tuple[str | os.PathLike[str] | None, ...] = ()) -> Path:
    """The output path, after refusing what would fail later: an existing file (unless ``force``),
    a directory, a missing parent folder; never (even with ``force``) a link, a device, FIFO or socket,
    or one of ``inputs``. Call it before slow work."""
    out = Path(path)
    refuse_replacing(out)
    refuse_inputs(out, inputs)
    if out.exists() and not force:
        raise OutputExistsError(f"output {str(out)!r} exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise OutputPathError(f"output folder {str(out.parent)!r} does not exist; create it first")
    return out


def disk_full_error(target: Path, exc: BaseException) -> OutputError | None:
    """An `OutputError` when ``exc`` (or its cause) is a full disk, a quota or a file-size limit, or when a
    write failed and the target's filesystem has (almost) no free space left; None otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return OutputError(f"cannot write {str(target)!r}: {os.strerror(seen.errno).lower()}; "
                               "free some space (or raise the limit) and run again, nothing was replaced")
        seen = seen.__cause__ or seen.__context__
    if not isinstance(exc, (OSError, RuntimeError)):  # our own errors say what went wrong themselves
        return None
    with contextlib.suppress(OSError):
        fs = os.statvfs(target.parent)
        if fs.f_bavail * fs.f_frsize < LOW_SPACE_BYTES:
            return OutputError(f"cannot write {str(target)!r}: no space left on device; "
                               "free some space and run again, nothing was replaced")
    return None


def default_output(source: str | os.PathLike[str], suffix: str) -> Path:
    """``model.pth.tar`` -> ``model<suffix>`` beside it; a folder (hub layout) exports beside itself."""
    src = Path(source)
    stem = src.name.split(".")[0] if src.is_file() else src.name
    return src.parent / f"{stem}{suffix}"


class Staging:
    """A temporary folder beside ``target``; `commit` moves what was written there into place."""

    def __init__(self, target: Path, folder: Path, force: bool) -> None:
        self.target = target
        self.folder = folder
        self.force = force
        self.committed = False

    @property
    def file(self) -> Path:
        """Where to write the output file itself (same name as the target, inside the folder)."""
        return self.folder / self.target.name

    def commit(self) -> list[Path]:
        """Move every staged file beside the target: data files first, the target file last."""
        refuse_replacing(self.target)  # a link, FIFO or device that appeared while we were working
        if self.target.exists() and not self.force:  # appeared while we were working
            raise OutputExistsError(f"output {str(self.target)!r} exists; pass --force to replace it")
        if not self.file.is_file():
            raise OutputError(f"nothing was written to {str(self.target)!r}; no output replaced")
        moved = []
        items = sorted(self.folder.iterdir(), key=lambda p: p.name == self.target.name)
        for item in items:
            refuse_replacing(self.target.parent / item.name)
        with held(finishing=True):  # SIGTERM between two renames waits for the last: all of the output or none of it
            for item in items:
                destination = self.target.parent / item.name
                os.replace(item, destination)
                moved.append(destination)
            self.committed = True
        return moved


@contextlib.contextmanager
def staged_output(path: str | os.PathLike[str], force: bool = False) -> Iterator[Staging]:
    """Stage an output (and any files that travel with it); nothing is replaced until ``commit()``."""
    target = check_output(path, force)
    with contextlib.ExitStack() as stack:  # the folder goes when the block ends, however it ends
        try:
            folder = stack.enter_context(scratch_folder(f".{target.name}.", target.parent, suffix=".tmp"))
        except OSError as exc:
            raise OutputError(
                f"cannot write to {str(target.parent)!r} ({exc.strerror}); choose a writable output path"
            ) from exc
        try:
            yield Staging(target, folder, force)
        except Exception as exc:
            full = None if isinstance(exc, VitexportError) else disk_full_error(target, exc)
            if full is not None:
                raise full from exc
            raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temporary path with the output's name; it replaces ``path`` only if the block succeeds."""
    with staged_output(path, force) as stage:
        yield stage.file
        stage.commit()


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike[str], force: bool = False,
                  stage_in: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Yield a temporary folder (in ``stage_in``, default: beside ``path``; on the same filesystem) that becomes
    ``path`` only if the block succeeds. An existing folder at ``path`` is replaced only with ``force`` (moved
    aside, the new one renamed in, the old one removed); a file, link or device there is refused even with it."""
    target = Path(path)
    scratch = Path(stage_in) if stage_in is not None else target.parent
    try:
        info = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        info = None
    if info is not None and (stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode)):
        raise OutputExistsError(f"output {str(target)!r} exists and is not a folder; remove it or choose another "
                                "name (--force replaces folders only)")
    if info is not None and not force:
        raise OutputExistsError(f"output {str(target)!r} exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise OutputPathError(f"output folder {str(target.parent)!r} does not exist; create it first")
    with contextlib.ExitStack() as stack:
        try:
            staged = stack.enter_context(scratch_folder(f".{target.name}.", scratch, suffix=".tmp"))
            old = stack.enter_context(scratch_folder(f".{target.name}.", scratch, suffix=".old"))
        except OSError as exc:
            raise OutputError(f"cannot write to {str(target.parent)!r} ({exc.strerror}); choose a writable "
                              "output path") from exc
        try:
            yield staged
        except Exception as exc:
            full = None if isinstance(exc, VitexportError) else disk_full_error(target, exc)
            if full is not None:
                raise full from exc
            raise
        os.chmod(staged, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; a model folder is read by the server
        with held(finishing=True):
            if os.path.lexists(target):
                if not force or not target.is_dir() or target.is_symlink():  # appeared while we were working
                    raise OutputExistsError(f"output {str(target)!r} exists; pass --force to replace it")
                os.replace(target, old / "previous")  # removed with ``old`` when the block ends
            try:
                os.replace(staged, target)
            except OSError:
                if (old / "previous").exists():
                    os.replace(old / "previous", target)
                raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (other threads keep theirs)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as fh:
            return int(next(line for line in fh if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str, force: bool = False) -> Path:
    """Write a text file atomically."""
    with atomic_file(path, force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


__all__ = [
    "Staging", "atomic_file", "check_output", "default_output", "disk_full_error", "refuse_inputs", "refuse_replacing",
    "staged_folder", "staged_output", "write_text",
]
