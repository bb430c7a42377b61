"""Hostile files: small crafted checkpoints, pickles, zips, configs and ONNX metadata (issue 11).

Every case ends by itself, at once, with exit 1 or 2 and one line naming the problem and the fix.
The cases that crashed, hung or ate gigabytes before the fix run in one child interpreter under a
3 GB memory limit and a timeout (`limited.run_cli`), so a regression fails here instead of taking
the test run down. docs/bad-inputs.md lists each with its test.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from tests.helpers.limited import run_cli
from tests.helpers.models import CONFIGS, SAMPLES, make_model
from vitexport._util.errors import CheckpointError, ConfigError, IsolationError, UnsafeCheckpointError
from vitexport.checkpoint.load import load_model
from vitexport.cli import cli
from vitexport.security import isolate

SAMPLE = SAMPLES / "digits-vit.pt"
PROTO2 = b"\x80\x02"


# ---------------------------------------------------------------------------
# crafted files (each a few bytes to a few MB)
# ---------------------------------------------------------------------------
def deep_key_pickle(levels: int) -> bytes:
    """{((((...),),),): None}: a dict key nested ``levels`` tuples deep (hashing it overflowed the C stack)."""
    return PROTO2 + b"}" + b")" + b"\x85" * levels + b"N" + b"s" + b"."


def shared_pairs_pickle(levels: int) -> bytes:
    """A key of ``levels`` nested pairs (a, a) sharing one memo entry: 2**levels steps to hash."""
    body = b")q\x00" + b"h\x00h\x00\x86q\x00" * levels
    return PROTO2 + b"}" + body + b"N" + b"s" + b"."


def global_call_pickle(module: str, name: str, arg: bytes) -> bytes:
    return PROTO2 + f"c{module}\n{name}\n".encode() + arg + b"\x85R."


def in_torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A real torch zip checkpoint whose data.pkl is replaced."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in items:
            zout.writestr(info, data_pkl if info.filename.endswith("data.pkl") else data)
    return path


def patch_zip_sizes(path: Path, member_suffix: str, declared: int, deflate: bool = True) -> Path:
    """Rewrite ``member``'s declared uncompressed size (local and central headers) to ``declared``."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in items:
            info.compress_type = zipfile.ZIP_DEFLATED if info.filename.endswith(member_suffix) and deflate \
                else zipfile.ZIP_STORED
            zout.writestr(info, data)
    raw = bytearray(path.read_bytes())
    for signature, offset, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = raw.find(signature)
        while at >= 0:
            name_len = struct.unpack("<H", raw[at + name_at - 4 : at + name_at - 2])[0] if signature == b"PK\x03\x04" \
                else struct.unpack("<H", raw[at + 28 : at + 30])[0]
            if raw[at + name_at : at + name_at + name_len].decode().endswith(member_suffix):
                raw[at + offset : at + offset + 4] = struct.pack("<I", declared)
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    return path


def many_entries_zip(path: Path, declared: int) -> Path:
    torch.save({"w": torch.zeros(2)}, path)
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"PK\x05\x06")
    raw[at + 8 : at + 12] = struct.pack("<HH", declared, declared)  # entries on this disk, in total
    path.write_bytes(bytes(raw))
    return path


def small_state_dict() -> dict[str, torch.Tensor]:
    return make_model(CONFIGS["spec_cls"]).state_dict()


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("crafted")
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        files[name] = d / name
        files[name].write_bytes(data)

    write("deep.pt", deep_key_pickle(2_000_000))  # 2 MB
    files["deep_zip.pt"] = in_torch_zip(d / "deep_zip.pt", deep_key_pickle(2_000_000))
    write("shared.pt", shared_pairs_pickle(40))
    files["shared_zip.pt"] = in_torch_zip(d / "shared_zip.pt", shared_pairs_pickle(40))
    write("os_system.pt", global_call_pickle("os", "system", b"X\x04\x00\x00\x00true"))
    files["os_system_zip.pt"] = in_torch_zip(d / "os_system_zip.pt",
                                             global_call_pickle("os", "system", b"X\x04\x00\x00\x00true"))
    write("bytearray.pt", global_call_pickle("builtins", "bytearray", b"\x8a\x05\x00\x00\x00\x00\x04"))
    write("tuple_key.pt", PROTO2 + b"}" + b"K\x01K\x02\x86" + b"N" + b"s" + b".")
    big_ints = b"".join(b"\x8a\x09" + (k * (2**61 - 1)).to_bytes(9, "little", signed=True) + b"N" for k in range(1, 50))
    write("big_int_keys.pt", PROTO2 + b"}(" + big_ints + b"u.")
    write("protocol4.pt", pickle.dumps({"a": 1}, protocol=4))
    sd = small_state_dict()
    torch.save({**sd, "blocks.199999.norm1.weight": torch.ones(32)}, d / "depth_200000.pt")
    files["depth_200000.pt"] = d / "depth_200000.pt"
    expanded = {k: v for k, v in sd.items()}
    expanded["patch_embed.proj.weight"] = torch.zeros(1, 1, 1, 1).expand(16384, 1, 8, 8)
    torch.save(expanded, d / "expanded.pt")
    files["expanded.pt"] = d / "expanded.pt"
    base = torch.zeros(1000)
    torch.save({f"blocks.{i}.norm1.weight": base for i in range(200)}, d / "shared_views.pt")
    files["shared_views.pt"] = d / "shared_views.pt"
    torch.save({"arch": "aimv2_3b_patch14_224", "state_dict": sd}, d / "largest_arch.pth")
    files["largest_arch.pth"] = d / "largest_arch.pth"
    sample_config = load_model(SAMPLE).config.to_dict()
    (d / "classes.json").write_text(json.dumps(dict(sample_config, num_classes=30_000_000)))
    files["classes.json"] = d / "classes.json"
    torch.save({**sd, "head.weight": sd["head.weight"].to_sparse()}, d / "sparse.pt")
    files["sparse.pt"] = d / "sparse.pt"
    with pytest.warns(UserWarning, match="deprecated"):  # torch 2.14 deprecates quantized tensors
        quantized = torch.quantize_per_tensor(sd["head.weight"], 0.1, 0, torch.qint8)
    torch.save({**sd, "head.weight": quantized}, d / "qint8.pt")
    files["qint8.pt"] = d / "qint8.pt"
    for dtype in (torch.int64, torch.bool, torch.complex64):
        name = f"{str(dtype)[6:]}.pt"
        torch.save({**sd, "head.bias": sd["head.bias"].to(dtype)}, d / name)
        files[name] = d / name
    legacy = d / "legacy_short.pt"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-20_000])
    files["legacy_short.pt"] = legacy
    files["bomb_decl.pt"] = patch_zip_sizes(d / "bomb_decl.pt", "data.pkl", 3_000_000_000)
    files["bomb_real.pt"] = patch_zip_sizes(d / "bomb_real.pt", "data.pkl", 10)  # inflates past what it declares
    files["entries.pt"] = many_entries_zip(d / "entries.pt", 60_000)
    return files


# (file, extra args, exit code, fragments of the one-line message)
FILE_CASES = [
    ("deep.pt", [], 1, ["nests deeper than 64 levels", "re-save"]),
    ("deep_zip.pt", [], 1, ["nests deeper than 64 levels"]),
    ("shared.pt", [], 1, ["expands to more than"]),
    ("shared_zip.pt", [], 1, ["expands to more than"]),
    ("os_system.pt", [], 1, ["references os.system", "state_dict()"]),
    ("os_system_zip.pt", [], 1, ["references os.system"]),
    ("bytearray.pt", [], 1, ["references builtins.bytearray"]),
    ("tuple_key.pt", [], 1, ["uses a tuple as a dict key"]),
    ("big_int_keys.pt", [], 1, ["uses a large integer as a dict key"]),
    ("protocol4.pt", [], 1, ["is not a plain weights file", "opcode"]),
    ("depth_200000.pt", [], 1, ["needs", "parameters", "hold", "--config"]),
    ("expanded.pt", [], 1, ["patch_embed.proj.weight (16384, 1, 8, 8) is expanded with stride 0"]),
    ("shared_views.pt", [], 1, ["views of", "shared storage"]),
    ("largest_arch.pth", [], 1, ["do not fit the model config", "--config"]),
    ("sample", ["--config", "classes.json"], 1, ["head.weight (10, 64) vs model (30000000, 64)"]),
    ("sparse.pt", [], 1, ["holds a sparse tensor", "to_dense()"]),
    ("qint8.pt", [], 1, ["holds a quantized tensor", "dequantize()"]),
    ("int64.pt", [], 1, ["head.bias int64", "convert them to float32"]),
    ("bool.pt", [], 1, ["head.bias bool"]),
    ("complex64.pt", [], 1, ["head.bias complex64"]),
    ("legacy_short.pt", [], 1, ["the file holds", "re-save"]),
    ("bomb_decl.pt", [], 1, ["inflates to 3,000 MB", "limit 256 MB"]),
    ("bomb_real.pt", [], 1, ["cannot be read", "corrupt"]),
    ("entries.pt", [], 1, ["declares 60,000 zip entries (limit 50,000)"]),
]


@pytest.mark.slow
def test_hostile_checkpoints_end_in_one_line_under_3_gb(crafted: dict[str, Path]) -> None:
    """Each command either crashed (SIGSEGV), hung, or took gigabytes before; now one line each, within seconds."""
    def path(name: str) -> str:
        return str(SAMPLE if name == "sample" else crafted[name])

    cases = [["info", path(name), *[str(crafted[a]) if a in crafted else a for a in extra]]
             for name, extra, _, _ in FILE_CASES]
    for (_, _, code, fragments), outcome in zip(FILE_CASES, run_cli(*cases), strict=True):
        outcome.one_line_error(code, *fragments)


def test_hostile_checkpoints_refused_through_the_library(crafted: dict[str, Path]) -> None:
    """The same refusals from `load_model` (the export commands' loader), with the error classes users catch."""
    with pytest.raises(UnsafeCheckpointError, match=r"references os\.system"):
        load_model(crafted["os_system_zip.pt"])
    with pytest.raises(CheckpointError, match="nests deeper"):
        load_model(crafted["deep_zip.pt"])
    with pytest.raises(CheckpointError, match="expanded with stride 0"):
        load_model(crafted["expanded.pt"])
    with pytest.raises(CheckpointError, match=r"needs .* parameters"):
        load_model(crafted["depth_200000.pt"])


def test_a_crash_hang_or_memory_blowup_in_the_child_is_one_line() -> None:
    """The defence behind the pre-scans: whatever the unpickler does in its child ends as an error."""
    import ctypes

    with pytest.raises(IsolationError, match=r"crashed \(SIGSEGV\)"):
        isolate.call(lambda: ctypes.string_at(0), "reading 'x'", timeout_s=30, memory_bytes=1 << 30)
    with pytest.raises(IsolationError, match="did not finish in 1 s"):
        isolate.call(lambda: next(x for x in iter(int, 1) if x), "reading 'x'", timeout_s=1, memory_bytes=1 << 30)
    with pytest.raises(IsolationError, match=r"needs more than the 0\.5 GB"):
        isolate.call(lambda: len(bytearray(2 * 1024**3)), "reading 'x'", timeout_s=30, memory_bytes=1 << 29)
    with pytest.raises(ConfigError, match="keeps its class"):  # an error raised on purpose comes back as it was
        isolate.call(lambda: (_ for _ in ()).throw(ConfigError("keeps its class")), "x", 30, 1 << 30)
    assert isolate.call(lambda: {"ok": [1, 2]}, "x", 30, 1 << 30) == {"ok": [1, 2]}


def test_trial_load_runs_in_a_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A crash inside torch.load (simulated) ends the child, not the process: the error names the file."""
    import os
    import signal

    from vitexport.security import untrusted

    real = untrusted._torch_load
    parent = os.getpid()

    def crash_in_child(path, kind):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, kind)

    monkeypatch.setattr(untrusted, "_torch_load", crash_in_child)
    with pytest.raises(IsolationError, match=r"reading '.*digits-vit.pt' crashed \(SIGSEGV\)"):
        load_model(SAMPLE)
    monkeypatch.setenv("VITEXPORT_ISOLATE", "0")  # the switch for applications that cannot fork
    assert load_model(SAMPLE).config.embed_dim == 64


# ---------------------------------------------------------------------------
# configs: JSON and hub config.json
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"mlp_ratio": NaN}', "NaN is not a number"),
        ('{"mlp_ratio": Infinity}', "Infinity is not a number"),
        ('{"mlp_ratio": 1e999}', "overflows to infinity"),
        ('{"mlp_ratio": -1}', "mlp_ratio must be a positive finite number"),
        ('{"mlp_ratio": 1e300}', "gives an MLP of width"),
        ('{"embed_dim": 1' + "0" * 5000 + "}", "not usable JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
        ('{"class_token": "false"}', "class_token must be true or false"),
        ('{"depth": 99999999999}', "depth must be a positive integer (at most 2,147,483,647)"),
    ],
)
def test_hostile_config_json_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "c.json").write_text(text)
    result = CliRunner().invoke(cli, ["info", str(SAMPLE), "--config", str(tmp_path / "c.json")])
    assert result.exit_code == 1 and fragment in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output + result.stderr


def test_huge_config_json_is_refused_by_size(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"x": "' + "a" * (17 * 1024 * 1024) + '"}')
    result = CliRunner().invoke(cli, ["info", str(SAMPLE), "--config", str(tmp_path / "c.json")])
    assert result.exit_code == 1 and "over the 16 MB limit for JSON" in result.stderr, result.stderr


def test_nan_config_from_python_is_refused() -> None:
    with pytest.raises(ConfigError, match="mlp_ratio must be a positive finite number"):
        load_model(SAMPLE, config=dict(CONFIGS["spec_cls"], embed_dim=64, depth=4, num_heads=4,
                                       mlp_ratio=float("nan")))
    with pytest.raises(ConfigError, match="init_values must be a finite number"):
        load_model(SAMPLE, config=dict(CONFIGS["spec_cls"], init_values=float("inf")))


@pytest.mark.parametrize(
    "hub, fragment",
    [
        ({"architecture": "vit_base_patch16_224", "pretrained_cfg": ["not", "an", "object"]},
         "pretrained_cfg must be an object"),
        ({"pretrained_cfg": {"input_size": [1, "28", 28]}}, "input_size must be [channels, height, width]"),
        ({"pretrained_cfg": {"mean": ["a"], "std": [1]}}, "preprocess mean must be"),
        ({"pretrained_cfg": {"mean": [0.5], "std": [0]}}, "std must be non-zero"),
        ({"model_args": {}, "label_names": 7}, "labels must be a list of strings"),
        ({"model_args": {}, "label_names": {"zero": "a"}}, "labels must be a list of strings or an object"),
        ({"model_args": [1, 2]}, "model_args must be an object"),
    ],
)
def test_malformed_hub_config_is_one_line(tmp_path: Path, hub: dict, fragment: str) -> None:
    save_file(make_model(CONFIGS["spec_cls"]).state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hub))
    with pytest.raises(ConfigError) as info:
        load_model(tmp_path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# exported models: metadata and external data
# ---------------------------------------------------------------------------
def edited_copy(src: Path, dst: Path, edit) -> Path:
    proto = onnx.load(str(src))
    edit(proto)
    dst.write_bytes(proto.SerializeToString())
    return dst


def set_meta(key: str, value) -> callable:
    def edit(proto: onnx.ModelProto) -> None:
        for prop in proto.metadata_props:
            if prop.key == f"vitexport.{key}":
                prop.value = value if isinstance(value, str) else json.dumps(value)
    return edit


def edit_config(**changes) -> callable:
    def edit(proto: onnx.ModelProto) -> None:
        for prop in proto.metadata_props:
            if prop.key == "vitexport.config":
                prop.value = json.dumps({**json.loads(prop.value), **changes})
    return edit


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (set_meta("patch_size", [0, 0]), "metadata patch_size must be [height, width] of positive integers"),
        (edit_config(in_chans=3), "its metadata says 3 input channels but the graph takes 1"),
        (edit_config(patch_size=0), "patch_size must be positive"),
        (set_meta("preprocess", {"scale": 1, "mean": [0.5], "std": [0.0]}), "preprocess std must be non-zero"),
        (set_meta("labels", 12), "labels must be a list of strings"),
        (set_meta("batch_size", 10**12), "batch_size must be a positive integer"),
        (set_meta("config", "[" * 5000 + "]" * 5000), "metadata config is invalid"),
    ],
)
def test_hostile_onnx_metadata_is_one_line(sample_onnx: Path, tmp_path: Path, edit, fragment: str) -> None:
    from PIL import Image

    bad = edited_copy(sample_onnx, tmp_path / "bad.onnx", edit)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    for args in (["predict", str(bad), str(tmp_path / "x.png")], ["info", str(bad)], ["verify", str(bad)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and fragment in result.stderr, (args[0], result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def external_at(tensor: onnx.TensorProto, location: str) -> None:
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", "4")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def constant_node_outside(proto: onnx.ModelProto) -> None:
    node = onnx.helper.make_node("Constant", [], ["leak"], value=onnx.helper.make_tensor("leak", 1, [1], [0.0]))
    external_at(node.attribute[0].t, "../../etc/passwd")
    proto.graph.node.append(node)


def sparse_initializer_outside(proto: onnx.ModelProto) -> None:
    sparse = proto.graph.sparse_initializer.add()
    sparse.dims.extend([4])
    sparse.values.CopyFrom(onnx.helper.make_tensor("unused_values", onnx.TensorProto.FLOAT, [1], [1.0]))
    sparse.indices.CopyFrom(onnx.helper.make_tensor("unused_idx", onnx.TensorProto.INT64, [1], [0]))
    external_at(sparse.values, "/etc/passwd")


def subgraph_outside(proto: onnx.ModelProto) -> None:
    const = onnx.helper.make_node("Constant", [], ["c"], value=onnx.helper.make_tensor("c", 1, [1], [1.0]))
    external_at(const.attribute[0].t, "../secret.bin")
    branch = onnx.helper.make_graph([const], "branch", [], [onnx.helper.make_tensor_value_info("c", 1, [1])])
    cond = onnx.helper.make_node("If", ["cond_in"], ["if_out"], then_branch=branch, else_branch=branch)
    proto.graph.node.append(cond)


@pytest.mark.parametrize("edit", [constant_node_outside, sparse_initializer_outside, subgraph_outside],
                         ids=["constant-node", "sparse-initializer", "subgraph"])
def test_external_data_is_checked_in_every_tensor_field(sample_onnx: Path, tmp_path: Path, edit) -> None:
    (tmp_path / "sub").mkdir()
    bad = edited_copy(sample_onnx, tmp_path / "sub" / "evil.onnx", edit)
    for command in ("verify", "info"):
        result = CliRunner().invoke(cli, [command, str(bad)])
        assert result.exit_code == 1 and "outside the model's folder" in result.stderr, result.stderr
