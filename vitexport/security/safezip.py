"""Zip archives we did not write (torch checkpoints, TorchScript): bounded before anything inflates.

A zip's central directory declares each member's size; a 3 MB archive may declare (or hold)
gigabytes. `open_zip` checks the directory before any member is read: the entry count, each
member's declared size against a ceiling, and that stored (uncompressed) members fit inside
the file. `read_member` then reads with a cap of its own, so a member that inflates to more
than it declared (or than the caller allows) is cut off and refused, never trusted.

torch's own reader (``torch.load``, ``torch.jit.load``) allocates each member's declared size
before inflating it; running `open_zip` first is what bounds it. Torch-free.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from vitexport._util.errors import CheckpointError

MAX_ENTRIES = 50_000  # ViT-g with EMA and optimizer state has a few thousand
MAX_COMPRESSED_MEMBER = 256_000_000  # an inflated member (torch writes tensors stored, not deflated)
MAX_METADATA_BYTES = 16_000_000  # pickles, code files, JSON
_EOCD = b"PK\x05\x06"


def declared_entries(path: Path) -> int | None:
    """The entry count the end-of-central-directory record declares (zip64's when the classic field says
    0xFFFF); None when no record is found (zipfile then refuses the file itself)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 65557 - 20))
        tail = fh.read()
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        return None
    count = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    if count != 0xFFFF:
        return count
    locator = tail.rfind(b"PK\x06\x07", 0, at)  # zip64: the locator points at the zip64 record
    if locator < 0:
        return None
    offset = struct.unpack("<Q", tail[locator + 8 : locator + 16])[0]
    with open(path, "rb") as fh:
        fh.seek(offset)
        record = fh.read(56)
    if len(record) < 40 or record[:4] != b"PK\x06\x06":
        return None
    return struct.unpack("<Q", record[32:40])[0]


def open_zip(path: str | os.PathLike[str], what: str) -> zipfile.ZipFile:
    """A ``ZipFile`` whose directory was checked (see the module doc); `CheckpointError` naming the member."""
    p = Path(path)
    count = declared_entries(p)
    if count is not None and count > MAX_ENTRIES:
        raise CheckpointError(f"{what} {str(p)!r} declares {count:,} zip entries (limit {MAX_ENTRIES:,}); "
                              "refused: re-save the file")
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{what} {str(p)!r} is not a readable zip archive ({exc}); "
                              "it is truncated or corrupt: re-save it") from exc
    try:
        _check_members(zf, p, what)
    except BaseException:
        zf.close()
        raise
    return zf


def _check_members(zf: zipfile.ZipFile, p: Path, what: str) -> None:
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise CheckpointError(f"{what} {str(p)!r} holds {len(infos):,} zip entries (limit {MAX_ENTRIES:,}); "
                              "refused: re-save the file")
    size = p.stat().st_size
    for info in infos:
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size or info.file_size > size:
                raise CheckpointError(
                    f"{what} {str(p)!r}: member {info.filename!r} declares {info.file_size:,} bytes but stores "
                    f"{info.compress_size:,}; the archive is corrupt or crafted: re-save it")
        elif info.file_size > MAX_COMPRESSED_MEMBER:
            raise CheckpointError(
                f"{what} {str(p)!r}: member {info.filename!r} inflates to {info.file_size / 1e6:,.0f} MB "
                f"(limit {MAX_COMPRESSED_MEMBER / 1e6:.0f} MB for compressed members); refused: re-save the file "
                "with torch.save, which stores tensors uncompressed")


def read_member(zf: zipfile.ZipFile, name: str, what: str, limit: int = MAX_METADATA_BYTES) -> bytes:
    """The bytes of member ``name``, at most ``limit`` of them, whatever its header declares."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise CheckpointError(f"{what}: member {name!r} declares {info.file_size / 1e6:,.1f} MB, over the "
                              f"{limit / 1e6:.0f} MB limit for it; refused")
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{what}: member {name!r} cannot be read ({exc}); the archive is corrupt") from exc
    if len(data) > limit:
        raise CheckpointError(f"{what}: member {name!r} inflates past the {limit / 1e6:.0f} MB limit for it; refused")
    return data


__all__ = ["MAX_COMPRESSED_MEMBER", "MAX_ENTRIES", "MAX_METADATA_BYTES", "declared_entries", "open_zip", "read_member"]
