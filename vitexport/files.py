"""The one way vitexport writes files: staged beside the output, moved into place only on success.

Every writer (exports, checkpoints, optimized and quantized graphs, verify reports,
heatmaps) goes through `staged_output`, directly or through `atomic_file`. Nothing
here imports torch or onnxruntime.

- `check_output` refuses an output before slow work starts: an existing file without
  ``force`` (`OutputExistsError`, exit 2), a directory (exit 2), a missing folder (exit 1).
- `staged_output` gives a temporary folder beside the output (same filesystem, so the
  final move is an atomic rename). ``commit()`` moves data files first and the output
  file last, so a reader never sees a model whose external data is not there yet.
  Without a commit, or on any error, the folder is removed and an existing output is
  left untouched.
- `atomic_file` is the single-file case: it yields the temporary path to write.

Files are created inside the staging folder by ordinary ``open()`` calls, so they get
the permissions of any file the user writes (0666 minus the umask), not ``mkstemp``'s
0600.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vitexport.errors import OutputError, OutputExistsError


def check_output(path: str | os.PathLike[str], force: bool = False) -> Path:
    """The output path, after refusing what would fail later: an existing file (unless ``force``),
    a directory, a missing parent folder. Call it before slow work."""
    out = Path(path)
    if out.is_dir():
        raise OutputExistsError(f"output {str(out)!r} is a directory; pass a file path with -o")
    if out.exists() and not force:
        raise OutputExistsError(f"output {str(out)!r} exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"output folder {str(out.parent)!r} does not exist; create it first")
    return out


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
        if self.target.exists() and not self.force:  # appeared while we were working
            raise OutputExistsError(f"output {str(self.target)!r} exists; pass --force to replace it")
        if not self.file.is_file():
            raise OutputError(f"nothing was written to {str(self.target)!r}; no output replaced")
        moved = []
        for item in sorted(self.folder.iterdir(), key=lambda p: p.name == self.target.name):
            destination = self.target.parent / item.name
            os.replace(item, destination)
            moved.append(destination)
        self.committed = True
        return moved


@contextlib.contextmanager
def staged_output(path: str | os.PathLike[str], force: bool = False) -> Iterator[Staging]:
    """Stage an output (and any files that travel with it); nothing is replaced until ``commit()``."""
    target = check_output(path, force)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise OutputError(
            f"cannot write to {str(target.parent)!r} ({exc.strerror}); choose a writable output path"
        ) from exc
    try:
        yield Staging(target, folder, force)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temporary path with the output's name; it replaces ``path`` only if the block succeeds."""
    with staged_output(path, force) as stage:
        yield stage.file
        stage.commit()


def write_text(path: str | os.PathLike[str], text: str, force: bool = False) -> Path:
    """Write a text file atomically."""
    with atomic_file(path, force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


__all__ = ["Staging", "atomic_file", "check_output", "default_output", "staged_output", "write_text"]
