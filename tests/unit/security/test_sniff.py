"""File kinds from magic bytes (`vitexport.security.sniff`): every kind, the one TorchScript rule, `require`'s errors.

Every command x every wrong kind of file, through the CLI, is tests/e2e/test_hostile_cli.py::test_wrong_file_kind.
"""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.hostile import SAMPLE, declare_entries, kind_files
from vitexport._util.errors import CheckpointError, FileKindError, InputError
from vitexport.security.images import ACCEPTED_FORMATS, KINDS
from vitexport.security.sniff import (
    IMAGE_KINDS,
    looks_like_onnx,
    onnx_start,
    require,
    sniff,
    sniff_bytes,
    torchscript_prefix,
)
from vitexport.security.torchscript_policy import is_torchscript, read_archive


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, sample_onnx: Path) -> dict[str, Path]:
    return kind_files(tmp_path_factory.mktemp("kinds"), sample_onnx)


# ---------------------------------------------------------------------------
# the sniffer
# ---------------------------------------------------------------------------
def test_kinds_of_real_files(files: dict[str, Path]) -> None:
    expected = {"checkpoint": "torch-zip", "legacy checkpoint": "torch-pickle", "safetensors": "safetensors",
                "model folder": "hub-folder", "onnx": "onnx", "truncated onnx": "onnx", "torchscript": "torchscript",
                "json": "json", "empty": "empty", "text": "unknown", "image": "png", "eps": "other-image"}
    assert {name: sniff(path).kind for name, path in files.items()} == expected


@pytest.mark.parametrize("mode", ["RGB", "L", "1"])
@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_every_decoded_image_format_is_its_kind(tmp_path: Path, fmt: str, mode: str) -> None:
    """PPM covers Netpbm's PBM (mode 1), PGM (L) and PPM (RGB), binary and the P1-P3 text forms."""
    path = tmp_path / "img"  # no suffix: the bytes decide
    try:
        Image.new(mode, (9, 7)).save(path, format=fmt)
    except OSError:
        pytest.skip(f"Pillow cannot write a mode {mode} {fmt}")
    assert sniff(path).kind == KINDS[fmt] and sniff(path).kind in IMAGE_KINDS
    if fmt == "PPM":
        for text in (b"P1\n2 1\n0 1\n", b"P2 2 1 255 0 9\n", b"P3\n# a comment\n1 1\n255\n1 2 3\n"):
            assert sniff_bytes(text, len(text)).kind == "ppm"
        assert sniff_bytes(b"P7 332\n", 7).kind != "ppm"  # XV thumbnails are not Netpbm
        assert sniff_bytes(b"P6x", 3).kind == "unknown"  # no whitespace after the magic


@pytest.mark.parametrize("head, label", [
    (b"%!PS-Adobe-3.0 EPSF-3.0\n", "an EPS file"),
    (b"\xc5\xd0\xd3\xc6" + b"\0" * 26, "an EPS file"),  # DOS EPS binary header
    (b"%PDF-1.7\n", "a PDF file"),
    (b"\0\0\1\0\1\0\x10\x10" + b"\0" * 8, "an ICO file"),
    (b"8BPS\0\1" + b"\0" * 10, "a PSD file"),
])
def test_other_image_formats_are_named(head: bytes, label: str) -> None:
    found = sniff_bytes(head, 1000)
    assert (found.kind, found.label) == ("other-image", label)


def test_other_image_is_an_input_error_for_images_and_unknown_elsewhere(files: dict[str, Path]) -> None:
    eps = files["eps"]
    with pytest.raises(InputError, match="is an EPS file, which vitexport does not decode; convert it to PNG"):
        require(eps, "image")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        require(eps, "checkpoint")


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"x")
    return path


@pytest.mark.parametrize("names, kind", [
    (["a/data.pkl", "a/code/__torch__/m.py", "a/constants.pkl"], "torchscript"),
    (["data.pkl", "code/__torch__/m.py"], "torchscript"),  # no top folder
    (["a/data.pkl", "a/data/0"], "torch-zip"),
    (["a/code/__torch__/m.py"], "zip"),  # code/ without data.pkl: not loadable TorchScript
    (["a/data.pkl", "b/code/__torch__/m.py"], "torch-zip"),  # code/ beside another folder's data.pkl
    (["readme.txt"], "zip"),
], ids=["torchscript", "torchscript-no-folder", "checkpoint", "code-only", "code-elsewhere", "other"])
def test_one_torchscript_rule(tmp_path: Path, names: list[str], kind: str) -> None:
    """sniff, torchscript_policy.is_torchscript and read_archive decide "TorchScript" by the same rule."""
    path = _zip(tmp_path / "x.zip", names)
    assert sniff(path).kind == kind
    assert is_torchscript(path) == (kind == "torchscript")
    assert (torchscript_prefix(names) is not None) == (kind == "torchscript")
    if kind != "torchscript":
        with pytest.raises(CheckpointError, match=r"has no code/ and data\.pkl"):
            read_archive(path)


def test_truncated_zips_are_judged_by_their_first_entry(files: dict[str, Path], tmp_path: Path) -> None:
    for name, kind in (("torchscript", "torchscript"), ("checkpoint", "torch-zip")):
        data = files[name].read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 3])  # no central directory left
        found = sniff(tmp_path / name)
        assert (found.kind, found.detail) == (kind, "truncated: no central directory"), found
    entries = declare_entries(Path(shutil.copy(files["torchscript"], tmp_path / "many.ts")), 60_000)
    assert sniff(entries).kind == "torch-zip" and not is_torchscript(entries)  # the reader names the count


def test_pickles_zips_and_folders(tmp_path: Path) -> None:
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert sniff(tmp_path / "raw.pkl").kind == "pickle"
    (tmp_path / "p0.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=0))  # no header: not recognisable
    assert sniff(tmp_path / "p0.pkl").kind == "unknown"
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "x")
    assert sniff(tmp_path / "other.zip").kind == "zip"
    data = SAMPLE.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:20000])  # the central directory is gone: judged by the first entry
    assert sniff(tmp_path / "cut.pt").kind == "torch-zip"
    (tmp_path / "plain").mkdir()
    assert sniff(tmp_path / "plain").kind == "directory"
    assert sniff(tmp_path / "missing").kind == "missing"


def test_onnx_needs_a_model_proto_start(sample_onnx: Path) -> None:
    """Protobuf has no magic: the first fields' numbers, wire types and lengths must be a ModelProto's."""
    data = sample_onnx.read_bytes()
    assert looks_like_onnx(data[:64], len(data))
    assert not looks_like_onnx(data[:64], 40) and onnx_start(data[:64], 40) == "truncated"  # a field runs past it
    assert not looks_like_onnx(b"\x08\x07" + b"\xff" * 200, 202)  # an unterminated varint tag
    assert not looks_like_onnx(b"\x08\x00\x12\x01x", 5)  # ir_version 0
    assert not looks_like_onnx(b"\x10\x07", 2)  # field 2 as a varint: producer_name is a string
    assert not looks_like_onnx(b"\x12\x01x", 3)  # a string alone: neither ir_version nor graph
    assert not looks_like_onnx(b"\x3a\x02\x08\x01", 4)  # a graph whose first field is not a GraphProto field
    assert sniff_bytes(b"\x08\x08:\x02\n\x00", 6).kind == "onnx"
    assert sniff_bytes(b'{"img_size": 28}', 16).kind == "json"
    assert sniff_bytes(b"[build-system]\nrequires = []\n", 29).kind == "unknown"  # TOML is not JSON


def test_require_deep_names_a_truncated_onnx(files: dict[str, Path]) -> None:
    assert require(files["truncated onnx"], "onnx").kind == "onnx"  # its first bytes are an ONNX model's
    with pytest.raises(CheckpointError, match=r"is not a readable ONNX model .*truncated"):
        require(files["truncated onnx"], "onnx", deep=True)
    with pytest.raises(FileKindError, match="is a PyTorch checkpoint, not an ONNX model"):
        require(files["checkpoint"], "onnx")


def test_paths_the_file_system_cannot_look_up_are_one_line_path_errors(tmp_path: Path) -> None:
    """A name over the file system's limit (os.stat: ENAMETOOLONG) and a loop of symbolic links (ELOOP) raised an
    unexpected OSError from `sniff`; they are unreadable paths now: exit 2 for a model, an error row for an image.
    A path through a regular file still reads as missing."""
    from vitexport._util.errors import CheckpointPathError, ImagePathError

    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("x")
    for path, reason in ((tmp_path / ("y" * 300 + ".onnx"), "File name too long"),
                         (loop, "Too many levels of symbolic links")):
        found = sniff(path)
        assert (found.kind, found.label, found.detail) == ("unknown", "unreadable", reason)
        with pytest.raises(CheckpointPathError, match=f"cannot be opened [(]{reason}[)]; check the path"):
            require(path, "info")
        with pytest.raises(ImagePathError, match=f"cannot be opened [(]{reason}[)]"):
            require(path, "image")
    assert sniff(tmp_path / "file" / "x.onnx").kind == "missing"
