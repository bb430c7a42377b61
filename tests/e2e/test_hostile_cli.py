"""Hostile files and arguments through the CLI (issue 11): every case ends by itself, at once, with exit 1 or 2 and
one line on stderr naming the problem and the fix, nothing written. The unit tests in tests/unit/security/ call the
library functions; these drive `vitexport` itself. docs/bad-inputs.md lists each case with its test.

The checkpoint cases that crashed, hung or ate gigabytes before the fix run in a child interpreter under a 3 GB
memory limit and a timeout (`limited.run_cli`): all of them in one child (one interpreter start), each reported as
its own test case; if that child dies, each case runs again in a child of its own, so the culprit is named.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.helpers.hostile import PNG, SAMPLE, declare_size, kind_files
from tests.helpers.images import crafted_exif_png, eps_bytes
from tests.helpers.limited import ROOT, Outcome, run_cli, run_cli_measured
from tests.helpers.shared import hostile_checkpoints
from tests.helpers.torchscript import (
    OVERWRITES,
    export_genuine,
    file_writing_archive,
    hostile_export,
    in_forward,
    is_model_code,
    rewrite,
)
from tests.helpers.wire import write_hostile_skeleton
from vitexport._util.errors import CheckpointError
from vitexport.cli import cli
from vitexport.security.torchscript_policy import check_archive, screen


def one_line(result, code: int, *fragments: str) -> None:
    Outcome(result.exit_code, result.stdout, result.stderr).one_line_error(code, *fragments)


# ---------------------------------------------------------------------------
# crafted checkpoints: one test case per file
# ---------------------------------------------------------------------------
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
CASE_IDS = [name if name != "sample" else "sample-classes.json" for name, *_ in FILE_CASES]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return hostile_checkpoints(tmp_path_factory)


def _info_args(crafted: dict[str, Path], name: str, extra: list[str]) -> list[str]:
    path = SAMPLE if name == "sample" else crafted[name]
    return ["info", str(path), *[str(crafted[a]) if a in crafted else a for a in extra]]


@pytest.fixture(scope="module")
def batch_outcomes(crafted: dict[str, Path]) -> dict[str, Outcome] | None:
    """Every case's outcome from one limited child; None when the child itself crashed or timed out."""
    try:
        outcomes = run_cli(*[_info_args(crafted, name, extra) for name, extra, _, _ in FILE_CASES])
    except (AssertionError, subprocess.TimeoutExpired):
        return None
    return {name: outcome for (name, *_), outcome in zip(FILE_CASES, outcomes, strict=True)}


@pytest.mark.parametrize("name, extra, code, fragments", FILE_CASES, ids=CASE_IDS)
def test_hostile_checkpoint_is_one_line_under_3_gb(crafted: dict[str, Path], batch_outcomes, name: str,
                                                   extra: list[str], code: int, fragments: list[str]) -> None:
    """Each file crashed (SIGSEGV), hung, or took gigabytes before; now one line, within seconds, under 3 GB."""
    if batch_outcomes is None:  # the shared child died: run this case alone to see whether it is the culprit
        outcome = run_cli(_info_args(crafted, name, extra))[0]
    else:
        outcome = batch_outcomes[name]
    outcome.one_line_error(code, *fragments)


# ---------------------------------------------------------------------------
# configs
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
    ids=["nan", "infinity", "overflow", "negative-mlp-ratio", "huge-mlp-ratio", "5000-digits", "100000-deep",
         "flag-as-string", "huge-depth"],
)
def test_hostile_config_json_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "c.json").write_text(text)
    one_line(CliRunner().invoke(cli, ["info", str(SAMPLE), "--config", str(tmp_path / "c.json")]), 1, fragment)


def test_huge_config_json_is_refused_by_size(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"x": "' + "a" * (17 * 1024 * 1024) + '"}')
    result = CliRunner().invoke(cli, ["info", str(SAMPLE), "--config", str(tmp_path / "c.json")])
    one_line(result, 1, "over the 16 MB limit for JSON")


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
    ids=["zero-patch", "channels", "config-zero-patch", "zero-std", "labels-not-a-list", "huge-batch",
         "config-5000-deep"],
)
def test_hostile_onnx_metadata_is_one_line(sample_onnx: Path, tmp_path: Path, edit, fragment: str) -> None:
    bad = edited_copy(sample_onnx, tmp_path / "bad.onnx", edit)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    for args in (["predict", str(bad), str(tmp_path / "x.png")], ["info", str(bad)], ["verify", str(bad)]):
        one_line(CliRunner().invoke(cli, args), 1, fragment)


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
        one_line(CliRunner().invoke(cli, [command, str(bad)]), 1, "outside the model's folder")


# ---------------------------------------------------------------------------
# ONNX graphs that allocate at run time (issue 22, row 2)
# ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind, command, code, fragment", [
    ("expand", "predict", 2, "node 'x0' (Expand)"),  # the issue's: 4.1 GB peak before
    ("tile", "bench", 2, "node 'b_tile' (Tile)"),
    ("attribute", "verify", 2, "node 'b_expand' (Expand)"),
    ("nonzero", "predict", 1, "node 'u_nonzero' (NonZero)"),
])
def test_run_time_memory_is_bounded_for_any_graph(sample_onnx: Path, tmp_path: Path, kind: str, command: str,
                                                  code: int, fragment: str) -> None:
    """Our digits export with a memory bomb folded into the logits (valid metadata): every command that runs a model
    refuses it before running, naming the node and --max-memory-gb, with the whole child under 1 GB; a graph
    whose shapes cannot be inferred is refused the same way (exit 1)."""
    from tests.helpers.onnx_bombs import folded

    path = folded(sample_onnx, tmp_path / "m.onnx", kind)
    args = {"predict": ["predict", path, PNG], "bench": ["bench", path, "--iters", "1"],
            "verify": ["verify", path, "--checkpoint", SAMPLE]}[command]
    outcome, peak, _ = run_cli_measured(args)
    outcome.one_line_error(code, fragment, "--max-memory-gb" if code == 2 else "vitexport onnx")
    assert peak < 1024**3, peak


# ---------------------------------------------------------------------------
# ONNX skeletons that cost objects, not bytes (issue 22, row 3)
# ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind, command", [("empty_nodes", "info"), ("packed_ints", "info"), ("dims", "predict"),
                                           ("unknown_fields", "bench")])
def test_40_mb_hostile_skeleton_costs_under_300_mb(tmp_path: Path, kind: str, command: str) -> None:
    """40 MB of empty NodeProtos took the old reader 3.5 GB and 2 minutes (5 million objects); every command reads
    models through the same reader, which now stops at its byte budget: one line, peak RSS of the whole child
    (interpreter and imports included) under 300 MB. Other instances: packed ints, dims, unknown fields (time)."""
    path = write_hostile_skeleton(tmp_path / "m.onnx", kind, 40_000_000)
    args = {"info": ["info", path], "predict": ["predict", path, PNG], "bench": ["bench", path]}[command]
    outcome, peak, seconds = run_cli_measured(args)
    outcome.one_line_error(1, "is not a readable ONNX model", "would take more than")
    assert peak < 300 * 1024**2, (peak, seconds)


# ---------------------------------------------------------------------------
# TorchScript archives
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_genuine(tmp_path_factory.mktemp("ts") / "digits.ts")


def test_archive_that_writes_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "written.bin"
    evil = tmp_path / "evil.ts"
    file_writing_archive(evil, target)  # a permissive loader really writes the file
    result = CliRunner().invoke(cli, ["verify", str(evil)])
    one_line(result, 1, "calls or references torch.from_file", "re-export the model")
    assert not target.exists()


@pytest.mark.parametrize("name", ["creates-a-file", OVERWRITES])
def test_shadowed_names_never_write_through_verify(genuine: Path, tmp_path: Path, name: str) -> None:
    """Issue 22: an edited export of ours whose forward maps a file (``torch.from_file(path, True, n)``) and later
    rebinds ``torch``, with dummy methods from_file/sum/add/mul (and fill_), passed `verify` 29/29 and created
    (or overwrote) the file. It is refused before anything is loaded."""
    target = tmp_path / "victim.bin"
    if name == OVERWRITES:
        target.write_bytes(b"A" * 16)
    evil = hostile_export(genuine, tmp_path / "evil.ts", name, target)
    result = CliRunner().invoke(cli, ["verify", str(evil), "--sizes", "28x28", "--batch-sizes", "1"])
    one_line(result, 1, "refused to load TorchScript archive", "differs at line", "re-export the model")
    assert (target.read_bytes() == b"A" * 16) if name == OVERWRITES else not target.exists()


def test_genuine_export_verifies(genuine: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", str(genuine), "--sizes", "28x28,17x45", "--batch-sizes", "2"])
    assert result.exit_code == 0 and "PASSED" in result.stdout, result.stderr


def test_an_export_of_another_config_verifies(tmp_path: Path) -> None:
    """A second config (another width, a features output), exported after the digits sample in this process (the
    code is named as in a fresh interpreter), is admitted and verifies."""
    from vitexport.export import export_torchscript
    from vitexport.model.config import ViTConfig
    from vitexport.model.family_models import model_for

    torch.manual_seed(0)
    path = tmp_path / "small.ts"
    cfg = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    export_torchscript(model_for(cfg), path, output="features")
    result = CliRunner().invoke(cli, ["verify", str(path), "--sizes", "32x32,24x40", "--batch-sizes", "2"])
    assert result.exit_code == 0 and "PASSED" in result.stdout, result.stderr


def test_info_reads_metadata_only(genuine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("info loaded the archive"))
    result = CliRunner().invoke(cli, ["info", str(genuine)])
    assert result.exit_code == 0 and "torchscript" in result.stdout, result.stderr
    for declared, fragment in ((2_500_000_000, "inflates to 2,500 MB (limit 256 MB for compressed members)"),
                               (20_000_000, "declares 20.0 MB, over the 16 MB limit")):
        bomb = declare_size(rewrite(genuine, tmp_path / "bomb.ts", "extra/vitexport.json", lambda d: d,
                                    deflate=True), "vitexport.json", declared)
        one_line(CliRunner().invoke(cli, ["info", str(bomb)]), 1, fragment, "TorchScript archive")


@pytest.mark.parametrize(
    "body, result, fragment",
    [
        pytest.param("    _z = 0\n    for _i in range(100000000000):\n      _z = torch.add(_z, 1)\n",
                     "torch.add(_0, _z)", "did not finish in 3 s", marks=pytest.mark.slow),  # waits out the 3 s
        ("    _p = torch.pad(x, [0, 300000, 0, 300000])\n", "torch.add(_0, torch.mean(_p))", "failed"),
    ],
    ids=["endless-loop", "huge-allocation"],
)
def test_admitted_code_still_runs_within_limits(genuine: Path, tmp_path: Path, body: str, result: str,
                                                fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code made only of what our exports use passes the screen but not the positive match (issue 22); were the
    match bypassed, the child's timeout and memory limit would turn looping or allocating into failed cases, and
    the run ends by itself."""
    import vitexport.security.torchscript_worker as worker

    monkeypatch.setattr(worker, "RUN_SECONDS", 3.0)
    bad = rewrite(genuine, tmp_path / "bad.ts", is_model_code, in_forward(body, result))
    with pytest.raises(CheckpointError, match="differs at line"):
        check_archive(bad)
    monkeypatch.setattr(worker, "check_archive", lambda path: screen(path)[1])  # the match bypassed
    out = CliRunner().invoke(cli, ["verify", str(bad), "--sizes", "28x28", "--batch-sizes", "1"])
    assert out.exit_code == 1 and "verification failed" in out.stderr, out.stderr
    assert fragment in out.stdout and "IsolationError" in out.stdout, out.stdout


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------
def test_predict_on_an_eps_named_png_never_starts_ghostscript(sample_onnx: Path, tmp_path: Path) -> None:
    """Pillow, asked to open any format, hands EPS to Ghostscript (a PostScript interpreter); predict opens only
    the accepted raster formats, so a `gs` first on PATH never runs."""
    fake = tmp_path / "bin"
    fake.mkdir()
    ran = tmp_path / "gs-ran"
    (fake / "gs").write_text(f"#!/bin/sh\ntouch '{ran}'\nexit 1\n")
    (fake / "gs").chmod(0o755)
    eps = tmp_path / "digit.png"
    eps.write_bytes(eps_bytes())
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pillow_alone = subprocess.run([sys.executable, "-c", f"from PIL import Image; Image.open({str(eps)!r}).load()"],
                                  capture_output=True, text=True, env=env, timeout=120)
    assert pillow_alone.returncode != 0 and ran.exists(), pillow_alone.stderr  # the hazard is real here
    ran.unlink()
    proc = subprocess.run([sys.executable, "-m", "vitexport.cli", "predict", str(sample_onnx), str(eps)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    Outcome(proc.returncode, proc.stdout, proc.stderr).one_line_error(
        1, "'" + str(eps) + "' is an EPS file, which vitexport does not decode", "convert it to PNG")
    assert not ran.exists()


def test_predict_on_crafted_exif_is_one_line(sample_onnx: Path, tmp_path: Path) -> None:
    """Pillow's EXIF writer raised struct.error while turning the image: predict said "unexpected error"."""
    path = tmp_path / "crafted.png"
    path.write_bytes(crafted_exif_png(size=(28, 28)))
    result = CliRunner().invoke(cli, ["predict", str(sample_onnx), str(path)])
    one_line(result, 1, "is corrupt: its EXIF block does not parse")
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(ok)
    result = CliRunner().invoke(cli, ["predict", str(sample_onnx), str(ok), str(path), "--provider", "cpu"])
    assert result.exit_code == 0 and "is corrupt: its EXIF block does not parse" in result.stdout  # its own row
    assert result.stdout.startswith(f"{ok}  28x28  ") and "1 of 2 images failed" in result.stderr


# ---------------------------------------------------------------------------
# every command x every wrong kind
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, sample_onnx: Path) -> dict[str, Path]:
    return kind_files(tmp_path_factory.mktemp("kinds"), sample_onnx)


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
    ("predict IMAGE", "empty"): (1, "is empty", "pass a PNG, JPEG"),  # a bad image: its own row
    ("predict IMAGE", "text"): (1, "image 'not a model' does not exist", "check the path"),  # a list of paths
    ("predict IMAGE", "eps"): (1, "is an EPS file, which vitexport does not decode", "convert it to PNG, JPEG"),
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


ROW = re.compile(r"\| `vitexport ([^`]+)` \| (.+?) \|.*\| (\d) \| "
                 r"`test_hostile_cli.py::test_wrong_file_kind\[(.+?)\]` \|$")


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
