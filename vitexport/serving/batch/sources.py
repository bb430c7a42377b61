"""Where batch images come from: folders, globs, path lists, Parquet image columns, WebDataset tar shards.

Each SOURCE argument becomes one `Source`, which yields `Item`s (one image each, with its key) in a fixed
order and cuts them into `Shard`s, the unit of output and of resuming:

- a folder: walked recursively, each directory's entries sorted by name, symbolic links to folders not
  followed. Files with an image suffix (`IMAGE_SUFFIXES`) are images; ``.tar``/``.tar.gz``/``.tgz`` files are
  tar shards and ``.parquet`` files Parquet sources, read in place; other files are counted as ignored;
- a glob (``'data/**/*.jpg'``; ``**`` spans folders, not links to folders): the matching files in the same order,
  taken as images (or tar/Parquet files by suffix) whatever their suffix, since the pattern chose them;
- a text file listing image paths, one a line (blank lines and lines starting with ``#`` skipped; relative
  paths are relative to the current folder, as the shell reads them);
- one image file;
- a Parquet file: the encoded bytes in ``image_column`` (binary, or a struct with a ``bytes`` field as the
  Hugging Face ``Image`` feature stores it), read a row group at a time;
- a tar file (WebDataset-style shard, optionally gzip-compressed): its image members in archive order,
  streamed; other members (``.cls``, ``.json``, ...) skipped.

Image files are cut into shards of ``shard_size`` in order; a Parquet file into row ranges of
``shard_size``; a tar file is one shard. Keys: ``path`` (the image file as listed, or the tar or Parquet
file), ``member`` (tar), ``row`` (Parquet, from 0). A container that cannot be read, an oversized member and
an empty Parquet cell become items with a ``problem``: an error row, never a stopped job.

Images are decoded by `decode_image`, the one decoder of files and bytes with `predict`'s limits. Nothing
here imports torch, Ray or (outside Parquet sources) pyarrow.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from vitexport._util.errors import FileKindError, ImagePathError, InputError, UsageError, one_line
from vitexport.serving.defaults import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_SHARD_SIZE

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                            ".pgm", ".pbm", ".pnm"})
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIX = ".parquet"
KEY_COLUMNS = ("path", "member", "row")
LIST_LINE_LIMIT = 4096  # characters of one path in a list file
PARQUET_READ_ROWS = 64  # rows of a Parquet file decoded at a time
SOURCE_KINDS = "a folder, a glob, a text file listing image paths, an image, Parquet files or tar shards"
_GLOB_MAGIC = re.compile(r"[*?\[]")


def decode_image(source: str | bytes, check: Callable[[int, int], None] | None = None) -> Any:
    """A decoded, upright PIL image from a file path or encoded bytes, with `predict`'s limits: ``check(h, w)``
    (the Predictor's size check) and Pillow's decompression-bomb limit refuse it from the header, before any
    pixel is decoded. `InputError` names the problem. Through the project's one image decoder
    (`vitexport.security.images`: the one format list, for both forms)."""
    from vitexport.security.images import decode_bytes, read_image

    return read_image(source, check=check) if isinstance(source, str) else decode_bytes(source, check)


@dataclass(frozen=True)
class Item:
    """One image to run: its key, and where its bytes are (a file path, bytes read from a container) or why
    there are none (``problem``)."""

    path: str
    member: str | None = None
    row: int | None = None
    data: bytes | None = None
    problem: str | None = None

    @property
    def key(self) -> tuple[str, str | None, int | None]:
        return self.path, self.member, self.row

    def load(self, check: Callable[[int, int], None] | None = None) -> Any:
        """The decoded image (`decode_image`); `InputError` when it cannot be had."""
        if self.problem is not None:
            raise InputError(self.problem)
        return decode_image(self.data if self.data is not None else self.path, check)


@dataclass(frozen=True)
class Shard:
    """A unit of output: image files, a tar file, or a row range of a Parquet file. ``identity`` changes when
    what the shard reads changes (other files, a rewritten container), so resuming can tell."""

    index: int
    kind: str  # "files", "tar", "parquet", "broken" (a container that cannot be read: one error row)
    path: str = ""
    paths: tuple[str, ...] = ()
    start: int = 0
    stop: int = 0
    column: str = ""
    problem: str = ""
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    identity: str = field(default="", compare=False)

    @property
    def count(self) -> int | None:
        """Images in the shard when known before reading it (not for a tar file)."""
        return {"files": len(self.paths), "parquet": self.stop - self.start, "broken": 1}.get(self.kind)

    def describe(self) -> str:
        if self.kind == "files":
            return f"{len(self.paths)} image files from {self.paths[0]!r}" if self.paths else "no image files"
        if self.kind == "parquet":
            return f"rows {self.start}-{self.stop - 1} of {self.path!r}"
        return repr(self.path)

    def items(self) -> Iterator[Item]:
        """The shard's images, in order."""
        if self.kind == "files":
            return (Item(p) for p in self.paths)
        if self.kind == "tar":
            return tar_items(self.path, self.max_image_bytes)
        if self.kind == "parquet":
            return parquet_items(self.path, self.column, self.start, self.stop, self.max_image_bytes)
        return iter([Item(self.path, problem=self.problem)])


def _identity(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:32]


def _file_stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def make_shard(index: int, kind: str, **fields: Any) -> Shard:
    """A shard with its identity: the file list, or a container's path, size, time and range."""
    shard = Shard(index, kind, **fields)
    if kind == "files":
        ident = _identity(kind, *shard.paths)
    else:
        ident = _identity(kind, shard.path, *_file_stamp(shard.path), shard.column, shard.start, shard.stop,
                          shard.problem)
    return Shard(index, kind, **fields, identity=ident)


# ---------------------------------------------------------------------------
# containers: tar shards and Parquet files
# ---------------------------------------------------------------------------
def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def tar_items(path: str, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Iterator[Item]:
    """The image members of a tar file (plain or gzip), streamed in archive order; a tar that breaks off
    ends with one item saying where."""
    import tarfile
    import zlib

    seen = 0
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not member.isfile() or not _is_image_name(member.name):
                    continue
                seen += 1
                if member.size > max_image_bytes:
                    yield Item(path, member.name, problem=f"the member is {member.size:,} bytes, over the limit "
                                                         f"of {max_image_bytes:,} bytes per image")
                    continue
                handle = archive.extractfile(member)
                yield Item(path, member.name, data=handle.read() if handle is not None else b"")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        yield Item(path, problem=f"the tar file is truncated or corrupt after {seen} image members "
                                 f"({one_line(exc, 120)})")


def _pyarrow_parquet() -> Any:
    from vitexport._util.extras import require_extra

    require_extra("batch", "Reading Parquet files")
    import pyarrow.parquet as pq

    return pq


def _image_field(schema: Any, column: str, path: str) -> str:
    """How the image bytes are stored in ``column``: ``"binary"`` or ``"struct"`` (a ``bytes`` field)."""
    import pyarrow as pa

    if column not in schema.names:
        raise UsageError(f"Parquet file {path!r} has no column {column!r} (its columns: "
                         f"{', '.join(schema.names[:20])}); pass the image column with --image-column")
    kind = schema.field(column).type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return "binary"
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        return "struct"
    hint = " (paths: list them in a text file instead)" if pa.types.is_string(kind) or \
        pa.types.is_large_string(kind) else ""
    raise UsageError(f"column {column!r} of Parquet file {path!r} holds {kind}, not encoded image bytes{hint}; "
                     "pass a binary column, or a struct with a 'bytes' field, with --image-column")


def parquet_rows(path: str, column: str) -> int:
    """Rows of a Parquet file whose ``column`` holds image bytes, from its footer; `InputError` for a file that
    cannot be read, `UsageError` for a missing or wrong column."""
    pq = _pyarrow_parquet()
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise InputError(f"cannot read Parquet file {path!r} ({one_line(exc, 160)})") from None
    _image_field(meta.schema.to_arrow_schema(), column, path)
    return int(meta.num_rows)


def parquet_items(path: str, column: str, start: int, stop: int,
                  max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Iterator[Item]:
    """Rows ``start`` to ``stop - 1`` of a Parquet file's image column, reading only the row groups they are in."""
    pq = _pyarrow_parquet()
    try:
        reader = pq.ParquetFile(path)
        form = _image_field(reader.schema_arrow, column, path)
        groups, first, offset = [], None, 0
        for g in range(reader.metadata.num_row_groups):
            n = reader.metadata.row_group(g).num_rows
            if offset < stop and offset + n > start:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        row = first or 0
        for batch in reader.iter_batches(batch_size=PARQUET_READ_ROWS, row_groups=groups, columns=[column]):
            values = batch.column(0)
            if form == "struct":
                values = values.field("bytes")
            for value in values.to_pylist():
                if start <= row < stop:
                    yield _parquet_item(path, row, value, max_image_bytes)
                row += 1
    except (OSError, ValueError) as exc:
        yield Item(path, row=None, problem=f"cannot read rows {start}-{stop - 1} of the Parquet file "
                                           f"({one_line(exc, 160)})")


def _parquet_item(path: str, row: int, value: bytes | None, max_image_bytes: int) -> Item:
    if value is None:
        return Item(path, row=row, problem="the image cell is empty (null)")
    if len(value) > max_image_bytes:
        return Item(path, row=row, problem=f"the image is {len(value):,} bytes, over the limit of "
                                           f"{max_image_bytes:,} bytes per image")
    return Item(path, row=row, data=value)


# ---------------------------------------------------------------------------
# sources: one per SOURCE argument
# ---------------------------------------------------------------------------
@dataclass
class Source:
    """One SOURCE argument: the files it names (images and containers, in order), and how to shard them."""

    arg: str
    kind: str  # "folder", "glob", "list", "image", "tar", "parquet"
    image_column: str = "image"
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    ignored: int = 0  # files in a folder without an image, tar or Parquet suffix (counted by the last walk)

    def entries(self) -> Iterator[tuple[str, str]]:
        """(kind, path) of every file this source names, in order: kind ``image``, ``tar`` or ``parquet``."""
        if self.kind in ("image", "tar", "parquet"):
            yield self.kind, self.arg
        elif self.kind == "list":
            yield from (("image", p) for p in _list_paths(self.arg))
        else:
            self.ignored = 0
            found = _walk(self.arg) if self.kind == "folder" else _glob(self.arg)
            for path in found:
                kind = _kind_by_suffix(path)
                if kind is None and self.kind == "folder":
                    self.ignored += 1
                    continue
                yield kind or "image", path

    def shards(self, shard_size: int, first_index: int = 0) -> Iterator[Shard]:
        """The shards, numbered from ``first_index``: image files in runs of ``shard_size`` (in the order found),
        a Parquet file in row ranges of ``shard_size``, a tar file whole."""
        index, run = first_index, []
        for kind, path in self.entries():
            if kind == "image":
                run.append(path)
                if len(run) == shard_size:
                    yield make_shard(index, "files", paths=tuple(run))
                    index, run = index + 1, []
                continue
            for shard in self._container_shards(kind, path, shard_size, index):
                yield shard
                index += 1
        if run:
            yield make_shard(index, "files", paths=tuple(run))

    def _container_shards(self, kind: str, path: str, shard_size: int, index: int) -> Iterator[Shard]:
        cap = self.max_image_bytes
        if kind == "tar":
            yield make_shard(index, "tar", path=path, max_image_bytes=cap)
            return
        try:
            rows = parquet_rows(path, self.image_column)
        except InputError as exc:  # an unreadable file inside a folder: one error row, the job goes on
            if self.kind == "parquet":
                raise
            yield make_shard(index, "broken", path=path, problem=str(exc))
            return
        for i, start in enumerate(range(0, rows, shard_size)):
            yield make_shard(index + i, "parquet", path=path, start=start, stop=min(rows, start + shard_size),
                             column=self.image_column, max_image_bytes=cap)

    def items(self) -> Iterator[Item]:
        """Every image of the source, in order (what a shard-less reader such as `predict` needs)."""
        for kind, path in self.entries():
            if kind == "image":
                yield Item(path)
                continue
            for shard in self._container_shards(kind, path, 1 << 62, 0):
                yield from shard.items()

    def count(self) -> int | None:
        """Images in the source, when known without reading tar files (one more walk of a folder or glob)."""
        total = 0
        for kind, path in self.entries():
            if kind == "tar":
                return None
            total += 1 if kind == "image" else _rows_or_one(path, self.image_column)
        return total

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The key columns this source fills: ``path``, and ``member`` for tar files, ``row`` for Parquet."""
        if self.kind == "tar":
            return "path", "member"
        if self.kind == "parquet":
            return "path", "row"
        if self.kind in ("folder", "glob"):  # tar or Parquet files among the images: a walk (names only) tells
            kinds = {kind for kind, _ in self.entries()}
            return tuple(c for c, k in zip(KEY_COLUMNS, ("", "tar", "parquet"), strict=True) if not k or k in kinds)
        return ("path",)


def _rows_or_one(path: str, column: str) -> int:
    try:
        return parquet_rows(path, column)
    except InputError:
        return 1


def _kind_by_suffix(path: str) -> str | None:
    name = path.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(PARQUET_SUFFIX):
        return "parquet"
    return "image" if _is_image_name(name) else None


def _sorted_entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:  # unreadable or vanished while walking: nothing from it
        return []


def _walk(folder: str) -> Iterator[str]:
    """Files under ``folder``, depth first, each directory's entries by name; links to folders not followed."""
    for entry in _sorted_entries(folder):
        path = os.path.join(folder, entry.name)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)
        elif entry.is_file():
            yield path


def _glob(pattern: str) -> Iterator[str]:
    """Files matching ``pattern`` (``*``, ``?``, ``[...]`` within a name, ``**`` across folders), in `_walk`'s
    order; names starting with a dot match only a pattern that starts with one, as in the shell."""
    parts = pattern.split(os.sep)
    fixed = 0
    while fixed < len(parts) - 1 and not _GLOB_MAGIC.search(parts[fixed]):
        fixed += 1
    base = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")
    yield from _glob_in(base, parts[fixed:])


def _glob_in(base: str, parts: list[str]) -> Iterator[str]:
    head, rest = parts[0], parts[1:]
    if head == "**":
        if rest:
            yield from _glob_in(base, rest)
        for entry in _sorted_entries(base or "."):
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                yield from _glob_in(os.path.join(base, entry.name), parts)
            elif not rest and entry.is_file() and not entry.name.startswith("."):
                yield os.path.join(base, entry.name)
        return
    if not _GLOB_MAGIC.search(head):
        names = [head] if os.path.lexists(os.path.join(base, head)) else []
    else:
        names = [e.name for e in _sorted_entries(base or ".")
                 if fnmatchcase(e.name, head) and (head.startswith(".") or not e.name.startswith("."))]
    for name in names:
        path = os.path.join(base, name)
        if rest:
            if os.path.isdir(path):
                yield from _glob_in(path, rest)
        elif os.path.isfile(path):
            yield path


def _list_paths(list_file: str) -> Iterator[str]:
    """The paths in a list file, one a line; blank lines and ``#`` comments skipped."""
    try:
        with open(list_file, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                path = line.rstrip("\r\n")
                if not path.strip() or path.lstrip().startswith("#"):
                    continue
                yield path if len(path) <= LIST_LINE_LIMIT else path[:LIST_LINE_LIMIT] + "..."
    except OSError as exc:
        raise ImagePathError(f"cannot read the list file {list_file!r} ({exc.strerror}); check the path") from None


def _classify_file(path: str) -> str:
    """``tar``, ``parquet``, ``image`` or ``list`` for a SOURCE that is a file; `FileKindError` for a file of
    another kind vitexport knows (a model, a checkpoint, JSON). Files of no known kind are images: decoding says
    what is wrong with them, in their own row."""
    from vitexport.security.sniff import IMAGE_KINDS, sniff, wrong_kind_message

    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise ImagePathError(f"cannot read {path!r} ({exc.strerror}); check the path") from None
    if head.startswith(b"PAR1"):
        return "parquet"
    if head[257:262] == b"ustar" or (head.startswith(b"\x1f\x8b") and path.lower().endswith(TAR_SUFFIXES[1:])):
        return "tar"
    found = sniff(path)
    if found.kind in IMAGE_KINDS or (_is_image_name(path) and found.kind == "unknown"):
        return "image"  # an image file named as one: decoded (or refused) per image
    if found.kind == "unknown" and b"\0" not in head and _is_text(head):
        return "list"
    if found.kind in ("unknown", "empty", "other-image"):  # no kind of file vitexport knows: the image decoder
        return "image"  # says what is wrong with it, in that image's row (predict and batch alike)
    raise FileKindError(wrong_kind_message(path, found, "image") + f" (SOURCE takes {SOURCE_KINDS})")


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 4  # only a character cut at the end of the sample
    return True


def open_source(arg: str, image_column: str = "image",
                max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Source:
    """The `Source` a SOURCE argument names; `UsageError` (exit 2) for a missing path or an empty glob,
    `FileKindError` (exit 2) for a file of another kind (a model, a checkpoint, JSON)."""
    if os.path.isdir(arg):
        kind = "folder"
    elif os.path.isfile(arg):
        kind = _classify_file(arg)
    elif _GLOB_MAGIC.search(arg):
        kind = "glob"
        if next(_glob(arg), None) is None:
            raise UsageError(f"no files match {arg!r}; check the pattern (quote it so the shell does not expand it)")
    elif os.path.lexists(arg):
        raise UsageError(f"{arg!r} is not a regular file or folder; pass {SOURCE_KINDS}")
    else:
        raise UsageError(f"{arg!r} does not exist; pass {SOURCE_KINDS}")
    source = Source(arg, kind, image_column, max_image_bytes)
    if kind == "parquet":
        parquet_rows(arg, image_column)  # a missing or wrong column is a usage error, before any work
    return source


def open_sources(args: Sequence[str], image_column: str = "image",
                 max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> list[Source]:
    """One `Source` per argument (see `open_source`)."""
    if not args:
        raise UsageError(f"no SOURCE given; pass {SOURCE_KINDS}")
    return [open_source(str(a), image_column, max_image_bytes) for a in args]


def key_columns(sources: Sequence[Source]) -> tuple[str, ...]:
    """The key columns of a job over ``sources``, in `KEY_COLUMNS` order."""
    used = {c for s in sources for c in s.key_columns}
    return tuple(c for c in KEY_COLUMNS if c in used)


def all_shards(sources: Sequence[Source], shard_size: int) -> Iterator[Shard]:
    """Every shard of the job, numbered in order across the sources."""
    index = 0
    for source in sources:
        for shard in source.shards(shard_size, index):
            yield shard
            index = shard.index + 1


def source_paths(sources: Sequence[Source]) -> list[str]:
    """The sources as absolute paths (a glob's folder part resolved), for the job's identity."""
    return [str(Path(s.arg).absolute()) for s in sources]


__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES", "DEFAULT_SHARD_SIZE", "IMAGE_SUFFIXES", "KEY_COLUMNS", "Item", "Shard", "Source",
    "all_shards", "decode_image", "key_columns", "make_shard", "open_source", "open_sources", "parquet_items",
    "parquet_rows", "source_paths", "tar_items",
]
