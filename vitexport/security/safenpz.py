"""NumPy ``.npz`` archives we did not write (JAX/Flax checkpoints: big_vision, vision_transformer): bounded reads.

An ``.npz`` is a zip of ``.npy`` members. Before any member is read, `open_zip` checks the directory
(entry count, declared sizes); then the archive as a whole may declare at most twice its own size plus
one compressed member's ceiling (`MAX_COMPRESSED_MEMBER`), so overlapping or inflating members cannot
multiply it. Each member's header is parsed first: only floating-point arrays (float16, float32,
float64) whose declared shape fits the bytes the member declares are read, and always with
``allow_pickle=False``: an object array (a pickle) is refused, never loaded. Torch-free.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

from vitexport._util.errors import CheckpointError
from vitexport.security.safezip import MAX_COMPRESSED_MEMBER, open_zip

FLOAT_KINDS = ("float16", "float32", "float64")
MAX_HEADER = 10_000  # numpy's own default for read_array


def _header(fh: Any, name: str, what: str) -> tuple[tuple[int, ...], Any]:
    """(shape, dtype) from a ``.npy`` header (format 1.0 or 2.0), or a refusal naming the member."""
    import numpy as np

    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh, max_header_size=MAX_HEADER)
        else:
            raise ValueError(f"npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{what}: member {name!r} is not a readable .npy array ({exc}); re-save the file") \
            from exc
    return tuple(shape), dtype


def _check_dtype(dtype: Any, name: str, what: str) -> None:
    if dtype.hasobject or dtype.name not in FLOAT_KINDS:
        hint = " (bfloat16 is stored as raw 2-byte values)" if dtype.kind == "V" and dtype.itemsize == 2 else ""
        raise CheckpointError(
            f"{what}: array {name!r} is {dtype.str}{hint}, not float16/32/64; vitexport reads no pickled or "
            "non-float arrays: convert the checkpoint to float32 and re-save it")


def _check_total(zf: zipfile.ZipFile, path: Path, what: str) -> None:
    declared = sum(info.file_size for info in zf.infolist())
    limit = 2 * path.stat().st_size + MAX_COMPRESSED_MEMBER
    if declared > limit:
        raise CheckpointError(f"{what} {str(path)!r} declares {declared / 1e6:,.0f} MB of arrays in a "
                              f"{path.stat().st_size / 1e6:,.0f} MB file; refused: re-save it with numpy.savez")


def read_npz(path: str | os.PathLike[str], what: str = "checkpoint") -> dict[str, Any]:
    """Every array of an ``.npz`` (name without ``.npy`` -> ``numpy.ndarray``), read as the module doc says."""
    import numpy as np

    p = Path(path)
    out: dict[str, Any] = {}
    with open_zip(p, what) as zf:
        _check_total(zf, p, what)
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name == info.filename:
                raise CheckpointError(f"{what} {str(p)!r}: member {name!r} is not a .npy array; "
                                      "this is not a NumPy .npz checkpoint")
            with zf.open(info) as fh:
                shape, dtype = _header(fh, name, what)
            _check_dtype(dtype, name, what)
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise CheckpointError(f"{what}: array {name!r} declares shape {shape} ({dtype.name}), more than its "
                                      f"{info.file_size:,} bytes; the file is corrupt or crafted: re-save it")
            try:
                with zf.open(info) as fh:
                    out[name] = np.lib.format.read_array(fh, allow_pickle=False, max_header_size=MAX_HEADER)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise CheckpointError(f"{what}: array {name!r} cannot be read ({exc}); the file is truncated or "
                                      "corrupt: re-download it") from exc
    return out


__all__ = ["FLOAT_KINDS", "read_npz"]
