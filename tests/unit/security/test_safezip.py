"""Bounded zip reads (`vitexport.security.safezip`): a zip's declared sizes and entry counts are checked before
anything inflates, and never trusted while reading."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from tests.helpers.hostile import declare_entries, declare_size
from vitexport._util.errors import CheckpointError
from vitexport.security import safezip
from vitexport.security.safezip import declared_entries, open_zip, read_member


def make_zip(path: Path, members: dict[str, bytes], deflate: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def as_zip64(path: Path, count: int) -> Path:
    """Insert a zip64 end record (and its locator) that declares ``count`` entries; the classic record says 0xFFFF,
    as it does in a real zip64 archive."""
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", raw[at + 12 : at + 20])
    record = (b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset))
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, at, 1)
    raw[at + 8 : at + 12] = struct.pack("<HH", 0xFFFF, 0xFFFF)
    path.write_bytes(bytes(raw[:at] + record + locator + raw[at:]))
    return path


def refusal(call) -> str:
    with pytest.raises(CheckpointError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------------------
# entry counts
# ---------------------------------------------------------------------------
def test_declared_entries_classic_and_zip64(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {f"m{i}": b"x" for i in range(3)})
    assert declared_entries(path) == 3
    assert declared_entries(declare_entries(path, 60_000)) == 60_000
    assert declared_entries(as_zip64(make_zip(tmp_path / "b.zip", {"m": b"x"}), 7_000_000_000)) == 7_000_000_000
    (tmp_path / "c.zip").write_bytes(b"PK\x03\x04" + b"\0" * 100)  # no end record at all
    assert declared_entries(tmp_path / "c.zip") is None


@pytest.mark.parametrize("declare", [
    lambda p: declare_entries(p, 60_000),
    lambda p: as_zip64(p, 2**40),
], ids=["classic", "zip64"])
def test_too_many_declared_entries_are_refused_before_zipfile_reads_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declare) -> None:
    path = declare(make_zip(tmp_path / "a.zip", {"data.pkl": b"x"}))
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("zipfile parsed the directory"))
    assert "zip entries (limit 50,000); refused" in refusal(lambda: open_zip(path, "checkpoint"))


def test_a_directory_holding_more_entries_than_declared_is_refused(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile reads the directory by its size, not by the declared count: the entries it finds are counted too."""
    monkeypatch.setattr(safezip, "MAX_ENTRIES", 5)
    path = declare_entries(make_zip(tmp_path / "a.zip", {f"m{i}": b"x" for i in range(6)}), 3)
    assert "holds 6 zip entries (limit 5)" in refusal(lambda: open_zip(path, "checkpoint"))
    with open_zip(make_zip(tmp_path / "ok.zip", {f"m{i}": b"x" for i in range(5)}), "checkpoint") as zf:
        assert len(zf.namelist()) == 5


# ---------------------------------------------------------------------------
# declared sizes
# ---------------------------------------------------------------------------
def test_a_compressed_member_declaring_gigabytes_is_refused_unread(tmp_path: Path) -> None:
    path = declare_size(make_zip(tmp_path / "a.zip", {"a/data.pkl": b"x" * 100}), "data.pkl", 3_000_000_000)
    assert "inflates to 3,000 MB (limit 256 MB for compressed members)" in refusal(lambda: open_zip(path, "c"))


def test_a_stored_member_must_store_what_it_declares(tmp_path: Path) -> None:
    path = declare_size(make_zip(tmp_path / "a.zip", {"a/data/0": b"x" * 100}, deflate=False), "data/0", 50_000)
    assert "declares 50,000 bytes but stores 100" in refusal(lambda: open_zip(path, "c"))


def test_read_member_caps_what_a_member_declares_and_what_it_inflates_to(tmp_path: Path) -> None:
    big = b"0123456789" * 1000  # 10,000 bytes, deflates to a few dozen
    path = make_zip(tmp_path / "a.zip", {"meta.json": big})
    with open_zip(path, "archive") as zf:
        assert read_member(zf, "meta.json", "archive", limit=10_000) == big
        assert "declares 0.0 MB, over the 0 MB limit" in refusal(lambda: read_member(zf, "meta.json", "a", 9_999))
    lying = declare_size(make_zip(tmp_path / "b.zip", {"meta.json": big}), "meta.json", 10)  # says 10 bytes
    with open_zip(lying, "archive") as zf:
        message = refusal(lambda: read_member(zf, "meta.json", "archive", limit=100))
    assert "inflates past" in message or "cannot be read" in message  # cut off at the cap, or zipfile's CRC


def test_not_a_zip_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.zip").write_bytes(b"PK\x03\x04 not really")
    assert "is not a readable zip archive" in refusal(lambda: open_zip(tmp_path / "t.zip", "checkpoint"))
