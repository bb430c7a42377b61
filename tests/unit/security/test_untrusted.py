"""Torch files we did not write (`vitexport.security.untrusted.prescan`): every pickle is pre-scanned and every
storage it declares must be backed by the file's bytes, before torch reads it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from tests.helpers.hostile import global_call_pickle, in_torch_zip
from vitexport._util.errors import CheckpointError, UnsafeCheckpointError
from vitexport.security.untrusted import prescan

WEIGHTS = {"w": torch.arange(1000, dtype=torch.float32), "b": torch.ones(7, dtype=torch.float16)}


def shorten_member(path: Path, suffix: str, keep: int) -> Path:
    """The zip at ``path`` with member ``*suffix`` cut to its first ``keep`` bytes (stored)."""
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in items:
            zout.writestr(info, data[:keep] if info.filename.endswith(suffix) else data)
    return path


def test_genuine_files_pass_in_both_formats(tmp_path: Path) -> None:
    torch.save(WEIGHTS, tmp_path / "zip.pt")
    torch.save(WEIGHTS, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    prescan(tmp_path / "zip.pt", "torch-zip")
    prescan(tmp_path / "legacy.pt", "torch-pickle")


def test_a_storage_the_zip_does_not_hold_is_refused(tmp_path: Path) -> None:
    torch.save(WEIGHTS, tmp_path / "x.pt")
    with zipfile.ZipFile(tmp_path / "x.pt") as zf:
        key = next(n for n in zf.namelist() if "/data/" in n and zf.getinfo(n).file_size == 4000).rsplit("/", 1)[1]
    shorten_member(tmp_path / "x.pt", f"/data/{key}", 400)
    with pytest.raises(CheckpointError, match=f"storage '{key}' declares 1,000 x FloatStorage .* holds 0.0 MB"):
        prescan(tmp_path / "x.pt", "torch-zip")


def test_a_truncated_legacy_file_is_refused_by_its_declared_storages(tmp_path: Path) -> None:
    torch.save(WEIGHTS, tmp_path / "x.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "x.pt").read_bytes()
    (tmp_path / "x.pt").write_bytes(data[:-2000])
    with pytest.raises(CheckpointError, match=r"declares .* but the file holds"):
        prescan(tmp_path / "x.pt", "torch-pickle")


def test_globals_outside_a_weights_file_are_refused_in_both_formats(tmp_path: Path) -> None:
    payload = global_call_pickle("os", "system", b"X\x04\x00\x00\x00true")
    with pytest.raises(UnsafeCheckpointError, match=r"references os\.system"):
        prescan(in_torch_zip(tmp_path / "z.pt", payload), "torch-zip")
    legacy = tmp_path / "l.pt"
    torch.save(WEIGHTS, legacy, _use_new_zipfile_serialization=False)
    magic = 15  # the first pickle is torch's magic number: PROTO 2, LONG1 of 10 bytes, STOP; replace what follows
    legacy.write_bytes(legacy.read_bytes()[:magic] + payload)
    with pytest.raises(UnsafeCheckpointError, match=r"references os\.system"):
        prescan(legacy, "torch-pickle")
