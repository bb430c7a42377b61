"""Crafted hostile files the security tests share: pickles, torch zips with edited headers, one file of each kind.

Each is a few bytes to a few MB; what each one did before the defences is said where it is made.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

import torch

from tests.helpers.models import CONFIGS, SAMPLES, make_model

SAMPLE = SAMPLES / "digits-vit.pt"
PNG = SAMPLES / "images" / "digit-1-28px.png"
PROTO2 = b"\x80\x02"


# ---------------------------------------------------------------------------
# pickles
# ---------------------------------------------------------------------------
def deep_key_pickle(levels: int) -> bytes:
    """{((((...),),),): None}: a dict key nested ``levels`` tuples deep (hashing it overflowed the C stack)."""
    return PROTO2 + b"}" + b")" + b"\x85" * levels + b"N" + b"s" + b"."


def shared_pairs_pickle(levels: int) -> bytes:
    """A key of ``levels`` nested pairs (a, a) sharing one memo entry: 2**levels steps to hash."""
    body = b")q\x00" + b"h\x00h\x00\x86q\x00" * levels
    return PROTO2 + b"}" + body + b"N" + b"s" + b"."


def global_call_pickle(module: str, name: str, arg: bytes) -> bytes:
    """``module.name(arg)`` on load."""
    return PROTO2 + f"c{module}\n{name}\n".encode() + arg + b"\x85R."


# ---------------------------------------------------------------------------
# zips
# ---------------------------------------------------------------------------
def in_torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A real torch zip checkpoint whose data.pkl is replaced."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in items:
            zout.writestr(info, data_pkl if info.filename.endswith("data.pkl") else data)
    return path


def declare_size(path: Path, member_suffix: str, declared: int) -> Path:
    """Rewrite the uncompressed size member ``*member_suffix`` declares, in its local and central headers."""
    raw = bytearray(path.read_bytes())
    for signature, offset, name_at, length_at in ((b"PK\x03\x04", 22, 30, 26), (b"PK\x01\x02", 24, 46, 28)):
        at = raw.find(signature)
        while at >= 0:
            n = struct.unpack("<H", raw[at + length_at : at + length_at + 2])[0]
            if raw[at + name_at : at + name_at + n].endswith(member_suffix.encode()):
                raw[at + offset : at + offset + 4] = struct.pack("<I", declared)
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    return path


def torch_zip_declaring(path: Path, member_suffix: str, declared: int, deflate: bool = True) -> Path:
    """A torch zip whose ``member`` (deflated, or stored) declares ``declared`` uncompressed bytes."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in items:
            info.compress_type = zipfile.ZIP_DEFLATED if info.filename.endswith(member_suffix) and deflate \
                else zipfile.ZIP_STORED
            zout.writestr(info, data)
    return declare_size(path, member_suffix, declared)


def declare_entries(path: Path, declared: int) -> Path:
    """Rewrite the entry counts of the zip's end-of-central-directory record."""
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"PK\x05\x06")
    raw[at + 8 : at + 12] = struct.pack("<HH", declared, declared)  # entries on this disk, in total
    path.write_bytes(bytes(raw))
    return path


def many_entries_zip(path: Path, declared: int) -> Path:
    torch.save({"w": torch.zeros(2)}, path)
    return declare_entries(path, declared)


# ---------------------------------------------------------------------------
# crafted checkpoints, by name (the CLI and library tests take them one per test case)
# ---------------------------------------------------------------------------
def small_state_dict() -> dict[str, torch.Tensor]:
    return make_model(CONFIGS["spec_cls"]).state_dict()


def _pickles(d: Path) -> dict[str, Path]:
    raw = {
        "deep.pt": deep_key_pickle(2_000_000),  # 2 MB
        "shared.pt": shared_pairs_pickle(40),
        "os_system.pt": global_call_pickle("os", "system", b"X\x04\x00\x00\x00true"),
        "bytearray.pt": global_call_pickle("builtins", "bytearray", b"\x8a\x05\x00\x00\x00\x00\x04"),
        "tuple_key.pt": PROTO2 + b"}" + b"K\x01K\x02\x86" + b"N" + b"s" + b".",
        "big_int_keys.pt": PROTO2 + b"}(" + b"".join(
            b"\x8a\x09" + (k * (2**61 - 1)).to_bytes(9, "little", signed=True) + b"N" for k in range(1, 50)) + b"u.",
        "protocol4.pt": pickle.dumps({"a": 1}, protocol=4),
    }
    files = {}
    for name, data in raw.items():
        files[name] = d / name
        files[name].write_bytes(data)
    for name in ("deep", "shared", "os_system"):
        files[f"{name}_zip.pt"] = in_torch_zip(d / f"{name}_zip.pt", raw[f"{name}.pt"])
    return files


def _state_dicts(d: Path) -> dict[str, Path]:
    from vitexport import load_model

    sd, base = small_state_dict(), torch.zeros(1000)
    saved = {
        "depth_200000.pt": {**sd, "blocks.199999.norm1.weight": torch.ones(32)},
        "expanded.pt": {**sd, "patch_embed.proj.weight": torch.zeros(1, 1, 1, 1).expand(16384, 1, 8, 8)},
        "shared_views.pt": {f"blocks.{i}.norm1.weight": base for i in range(200)},  # 200 views of one storage
        "largest_arch.pth": {"arch": "aimv2_3b_patch14_224", "state_dict": sd},
        "sparse.pt": {**sd, "head.weight": sd["head.weight"].to_sparse()},
        **{f"{str(dtype)[6:]}.pt": {**sd, "head.bias": sd["head.bias"].to(dtype)}
           for dtype in (torch.int64, torch.bool, torch.complex64)},
    }
    with warnings.catch_warnings():  # torch 2.14 deprecates quantized tensors (it warns once per process)
        warnings.filterwarnings("ignore", "quantize_per_tensor", UserWarning)
        warnings.filterwarnings("ignore", ".*deprecated", UserWarning)
        saved["qint8.pt"] = {**sd, "head.weight": torch.quantize_per_tensor(sd["head.weight"], 0.1, 0, torch.qint8)}
    files = {}
    for name, obj in saved.items():
        files[name] = d / name
        torch.save(obj, files[name])
    files["legacy_short.pt"] = d / "legacy_short.pt"
    torch.save(sd, files["legacy_short.pt"], _use_new_zipfile_serialization=False)
    files["legacy_short.pt"].write_bytes(files["legacy_short.pt"].read_bytes()[:-20_000])
    files["classes.json"] = d / "classes.json"
    files["classes.json"].write_text(json.dumps(dict(load_model(SAMPLE).config.to_dict(), num_classes=30_000_000)))
    return files


def crafted_checkpoints(d: Path) -> dict[str, Path]:
    """Every crafted checkpoint (and the config some cases pass with ``--config``), by file name, under ``d``."""
    return {
        **_pickles(d), **_state_dicts(d),
        "bomb_decl.pt": torch_zip_declaring(d / "bomb_decl.pt", "data.pkl", 3_000_000_000),
        "bomb_real.pt": torch_zip_declaring(d / "bomb_real.pt", "data.pkl", 10),  # inflates past what it declares
        "entries.pt": many_entries_zip(d / "entries.pt", 60_000),
    }


# ---------------------------------------------------------------------------
# one file of each kind
# ---------------------------------------------------------------------------
def kind_files(d: Path, sample_onnx: Path) -> dict[str, Path]:
    """One file of each kind `sniff` tells apart (all from the same small model where a model is needed)."""
    from PIL import Image
    from safetensors.torch import save_file

    from vitexport.export.exporter import export_torchscript

    sd = small_state_dict()
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
    Image.new("L", (28, 28), 128).save(d / "digit.png", format="EPS")  # an EPS file named .png
    out["eps"] = d / "digit.png"
    return out
