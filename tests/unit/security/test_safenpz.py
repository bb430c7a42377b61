"""The .npz reader (`vitexport.security.safenpz`): bounded before it inflates, no pickles, floats only."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from vitexport._util.errors import CheckpointError
from vitexport.security.safenpz import read_npz


def test_reader_returns_every_float_array(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    arrays = {"a/kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16),
              "c": np.zeros((1, 1, 2), np.float64)}
    np.savez(path, **arrays)
    got = read_npz(path)
    assert sorted(got) == sorted(arrays)
    for key, value in arrays.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key


@pytest.mark.parametrize(("array", "message"), [
    (np.array([{"a": 1}], dtype=object), "not float16/32/64"),  # a pickle inside the .npz
    (np.zeros(4, dtype="V2"), "bfloat16 is stored as raw 2-byte values"),
    (np.zeros(4, dtype=np.int32), "not float16/32/64"),
])
def test_reader_refuses_pickles_and_non_float_arrays(array: np.ndarray, message: str, tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, ok=np.zeros(3, np.float32), bad=array)
    with pytest.raises(CheckpointError, match=message):
        read_npz(path)


def _npy(shape: bytes, payload: bytes) -> bytes:
    """A .npy member written by hand (format 1.0), declaring ``shape`` whatever ``payload`` holds."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + b", }"
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + payload


def test_reader_refuses_a_shape_larger_than_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.npy", _npy(b"(4,)", bytes(16)))
        zf.writestr("small.npy", _npy(b"(999999999,)", bytes(16)))
    with pytest.raises(CheckpointError, match=r"'small' declares shape \(999999999,\)"):
        read_npz(path)


def test_reader_refuses_an_archive_declaring_far_more_than_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    member = _npy(b"(22500000,)", bytes(90_000_000))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):  # 3 x 90 MB of zeros deflate to a few hundred KB
            zf.writestr(f"z{i}.npy", member)
    with pytest.raises(CheckpointError, match="MB of arrays in a"):
        read_npz(path)


def test_reader_refuses_a_member_that_is_not_an_array(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match=r"not a \.npy array"):
        read_npz(path)


def test_sniff_tells_an_npz_from_other_zips(tmp_path: Path) -> None:
    """Only a zip whose members are all ``.npy`` is an ``npz`` (a checkpoint kind); ``savez_compressed`` too."""
    from vitexport.security.sniff import require, sniff

    np.savez(tmp_path / "w.npz", a=np.zeros(2, np.float32))
    np.savez_compressed(tmp_path / "c.npz", a=np.zeros(2, np.float32), b=np.ones(3, np.float32))
    for name in ("w.npz", "c.npz"):
        assert sniff(tmp_path / name).kind == "npz"
        assert require(tmp_path / name, "checkpoint").kind == "npz"
    with zipfile.ZipFile(tmp_path / "mixed.zip", "w") as zf:
        zf.writestr("a.npy", b"x")
        zf.writestr("readme.txt", b"x")
    assert sniff(tmp_path / "mixed.zip").kind == "zip"
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        require(tmp_path / "mixed.zip", "checkpoint")
