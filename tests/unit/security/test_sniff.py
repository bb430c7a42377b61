"""File kinds from magic bytes, and every command x wrong kind of file: a one-line message naming the kind and the fix.

docs/bad-inputs.md ("Wrong kind of file") lists the same pairs; `test_docs_list_every_pair` keeps the two in step.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.helpers.models import CONFIGS, ROOT, SAMPLES, make_model
from vitexport._util.errors import CheckpointError, FileKindError
from vitexport.cli import cli
from vitexport.security.sniff import looks_like_onnx, onnx_start, require, sniff, sniff_bytes

SAMPLE = SAMPLES / "digits-vit.pt"
PNG = SAMPLES / "images" / "digit-1-28px.png"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, sample_onnx: Path) -> dict[str, Path]:
    """One file of each kind (all from the same small model where a model is needed)."""
    from safetensors.torch import save_file

    from vitexport.export.torchscript_export import export_torchscript

    d = tmp_path_factory.mktemp("kinds")
    sd = make_model(CONFIGS["spec_cls"]).state_dict()
    out = {"checkpoint": SAMPLE, "image": PNG}
    torch.save(sd, d / "legacy.pt", _use_new_zipfile_serialization=False)
    out["legacy checkpoint"] = d / "legacy.pt"
    save_file(sd, str(d / "w.safetensors"))
    out["safetensors"] = d / "w.safetensors"
    (d / "hub").mkdir()
    save_file(sd, str(d / "hub" / "model.safetensors"))
    out["model folder"] = d / "hub"
    out["onnx"] = Path(shutil.copy(sample_onnx, d / "m.onnx"))
    (d / "cut.onnx").write_bytes(sample_onnx.read_bytes()[: sample_onnx.stat().st_size * 3 // 5])
    out["truncated onnx"] = d / "cut.onnx"
    export_torchscript(make_model(CONFIGS["spec_cls"]), d / "m.ts")
    out["torchscript"] = d / "m.ts"
    (d / "config.json").write_text(json.dumps(CONFIGS["spec_cls"]))
    out["json"] = d / "config.json"
    (d / "empty.onnx").write_bytes(b"")
    out["empty"] = d / "empty.onnx"
    (d / "notes.txt").write_text("not a model\n")
    out["text"] = d / "notes.txt"
    return out


# ---------------------------------------------------------------------------
# the sniffer
# ---------------------------------------------------------------------------
def test_kinds_of_real_files(files: dict[str, Path]) -> None:
    expected = {"checkpoint": "torch-zip", "legacy checkpoint": "torch-pickle", "safetensors": "safetensors",
                "model folder": "hub-folder", "onnx": "onnx", "truncated onnx": "onnx", "torchscript": "torchscript",
                "json": "json", "empty": "empty", "text": "unknown", "image": "png"}
    assert {name: sniff(path).kind for name, path in files.items()} == expected


@pytest.mark.parametrize("fmt, kind", [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("BMP", "bmp"),
                                       ("WEBP", "webp"), ("TIFF", "tiff")])
def test_image_formats(tmp_path: Path, fmt: str, kind: str) -> None:
    path = tmp_path / "img"  # no suffix: the bytes decide
    Image.new("RGB", (9, 7), (1, 2, 3)).save(path, format=fmt)
    assert sniff(path).kind == kind


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


# ---------------------------------------------------------------------------
# every command x every wrong kind
# ---------------------------------------------------------------------------
def _commands(onnx_model: Path, out: Path) -> dict[str, list[str]]:
    small = ["--sizes", "28x28", "--batch-sizes", "1"]
    return {
        "info": ["info", "{f}"],
        "onnx": ["onnx", "{f}", "-o", str(out / "o.onnx"), "--force"],
        "torchscript": ["torchscript", "{f}", "-o", str(out / "o.ts"), "--force"],
        "quantize": ["quantize", "{f}", "-o", str(out / "q.onnx"), "--force"],
        "verify": ["verify", "{f}", *small],
        "verify --checkpoint": ["verify", str(onnx_model), "--checkpoint", "{f}", *small],
        "predict": ["predict", "{f}", str(PNG)],
        "predict IMAGE": ["predict", str(onnx_model), "{f}"],
        "bench": ["bench", "{f}", *small, "--warmup", "0", "--iters", "1"],
    }


CKPT_FIX = "run `vitexport onnx"
# (command, kind) -> (exit code, what the message names, the fix it gives)
WRONG_KIND: dict[tuple[str, str], tuple[int, str, str]] = {
    ("info", "truncated onnx"): (1, "is not a readable ONNX model", "export it again"),
    ("info", "image"): (2, "is a PNG image", "vitexport predict MODEL.onnx"),
    ("info", "json"): (2, "is a JSON file", "as --config"),
    ("info", "empty"): (1, "is empty", "re-download or re-save"),
    ("info", "text"): (1, "is not a checkpoint or an exported model", "expected a PyTorch"),
    **{(cmd, kind): v for cmd in ("onnx", "torchscript") for kind, v in {
        "onnx": (2, "is an ONNX model", "already exported: `vitexport verify"),
        "truncated onnx": (2, "is an ONNX model (truncated)", "already exported: `vitexport verify"),
        "torchscript": (2, "is a TorchScript archive", "already exported: `vitexport verify"),
        "image": (2, "is a PNG image", "vitexport predict MODEL.onnx"),
        "json": (2, "is a JSON file", "as --config"),
        "empty": (1, "is empty", "re-download or re-save"),
        "text": (1, "is not a checkpoint", "expected a PyTorch"),
    }.items()},
    **{(cmd, kind): v for cmd in ("quantize", "predict", "bench") for kind, v in {
        "checkpoint": (2, "is a PyTorch checkpoint, not an ONNX model", CKPT_FIX),
        "legacy checkpoint": (2, "is a PyTorch checkpoint (legacy format), not an ONNX model", CKPT_FIX),
        "safetensors": (2, "is a safetensors weights file, not an ONNX model", CKPT_FIX),
        "model folder": (2, "is a model folder (model.safetensors), not an ONNX model", CKPT_FIX),
        "truncated onnx": (1, "is not a readable ONNX model", "export it again"),
        "torchscript": (2, "is a TorchScript archive, not an ONNX model", "export the checkpoint with `vitexport onnx"),
        "image": (2, "is a PNG image, not an ONNX model", "vitexport predict MODEL.onnx"),
        "json": (2, "is a JSON file, not an ONNX model", "--config"),
        "empty": (1, "is empty", "export it again"),
        "text": (1, "is not a readable ONNX model", "export it again"),
    }.items()},
    ("verify", "checkpoint"): (2, "is a PyTorch checkpoint, not an exported model", "or pass it as --checkpoint"),
    ("verify", "legacy checkpoint"): (2, "is a PyTorch checkpoint (legacy format), not an exported model",
                                      "or pass it as --checkpoint"),
    ("verify", "safetensors"): (2, "is a safetensors weights file, not an exported model",
                                "or pass it as --checkpoint"),
    ("verify", "model folder"): (2, "is a model folder (model.safetensors), not an exported model",
                                 "or pass it as --checkpoint"),
    ("verify", "truncated onnx"): (1, "is not a readable ONNX model", "export it again"),
    ("verify", "image"): (2, "is a PNG image, not an exported model", "vitexport predict MODEL.onnx"),
    ("verify", "json"): (2, "is a JSON file, not an exported model", "--config"),
    ("verify", "empty"): (1, "is empty", "export it again"),
    ("verify", "text"): (1, "is not a readable ONNX model", "export it again"),
    ("verify --checkpoint", "truncated onnx"): (1, "is not a readable ONNX model", "export it again"),
    ("verify --checkpoint", "torchscript"): (2, "is a TorchScript archive, not a checkpoint",
                                             "--checkpoint takes the PyTorch checkpoint or the float .onnx"),
    ("verify --checkpoint", "image"): (2, "is a PNG image, not a checkpoint", "vitexport predict MODEL.onnx"),
    ("verify --checkpoint", "json"): (2, "is a JSON file, not a checkpoint", "as --config"),
    ("verify --checkpoint", "empty"): (1, "is empty", "re-download or re-save"),
    ("verify --checkpoint", "text"): (1, "is not a checkpoint", "or the float .onnx export"),
    ("predict IMAGE", "onnx"): (2, "is an ONNX model, not an image", "the model comes first"),
    ("predict IMAGE", "checkpoint"): (2, "is a PyTorch checkpoint, not an image", "export it with `vitexport onnx"),
    ("predict IMAGE", "safetensors"): (2, "is a safetensors weights file, not an image", "`vitexport onnx"),
    ("predict IMAGE", "torchscript"): (2, "is a TorchScript archive, not an image", "the model comes first"),
    ("predict IMAGE", "json"): (2, "is a JSON file, not an image", "pass image files"),
    ("predict IMAGE", "empty"): (1, "is empty", "pass a PNG, JPEG"),
    ("predict IMAGE", "text"): (1, "cannot read image", "pass a PNG, JPEG"),
}


@pytest.mark.parametrize("command, kind", list(WRONG_KIND), ids=[f"{c}-{k}" for c, k in WRONG_KIND])
def test_wrong_file_kind(files: dict[str, Path], sample_onnx: Path, tmp_path: Path, command: str,
                         kind: str) -> None:
    code, names, fix = WRONG_KIND[(command, kind)]
    path = str(files[kind])
    args = [a.replace("{f}", path) for a in _commands(sample_onnx, tmp_path)[command]]
    result = CliRunner().invoke(cli, args)
    err = result.stderr
    assert result.exit_code == code, (result.exit_code, result.output)
    assert err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert repr(path) in err and names in err and fix in err, err
    assert not any(p.name.startswith(("o.", "q.")) for p in tmp_path.iterdir())  # nothing written


ROW = re.compile(r"\| `vitexport ([^`]+)` \| (.+?) \|.*\| (\d) \| `test_sniff.py::test_wrong_file_kind\[(.+?)\]` \|$")


def test_docs_list_every_pair() -> None:
    """docs/bad-inputs.md's table has one row per (command, kind) of WRONG_KIND, each naming this test."""
    text = (ROOT / "docs" / "bad-inputs.md").read_text()
    section = text.split("## Wrong kind of file", 1)[1]
    rows = set()
    for line in section.splitlines():
        m = ROW.match(line)
        if m:
            command, kind, code, test_id = m.groups()
            assert test_id == f"{command}-{kind}", line
            assert int(code) == WRONG_KIND[(command, kind)][0], line
            rows.add((command, kind))
    assert rows == set(WRONG_KIND)
