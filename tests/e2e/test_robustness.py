"""Untrusted files and bad input: every row of docs/bad-inputs.md, hypothesis parity, reports written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.models import CONFIGS, SAMPLES, make_model
from vitexport.cli import cli

SAMPLE = SAMPLES / "digits-vit.pt"


@pytest.fixture(scope="module")
def spec_export(exported):
    """reg_noembed (non-square 3x5 native grid, registers): the session's default export (read-only)."""
    model, path, _ = exported["reg_noembed"]
    return model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 4 * 24), w=st.integers(1, 4 * 40), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_property_onnx_equals_pytorch_for_any_size(spec_export, h: int, w: int, batch: int, seed: int) -> None:
    model, session, _ = spec_export
    x = np.random.default_rng(seed).standard_normal((batch, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = session.run(None, {"pixel_values": x})[0]
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), (h, w, batch)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert text in result.stderr, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_cli_unknown_architecture_suggests(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"arch": "vit_tiny_patch16_22", "state_dict": make_model(CONFIGS["spec_cls"]).state_dict()}, path)
    one_line(run("onnx", str(path)), 1, "did you mean 'vit_tiny_patch16_224'")


def test_cli_inconsistent_config(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"global_pool": "token", "class_token": False}))
    one_line(run("info", str(SAMPLE), "--config", str(tmp_path / "c.json")), 1, "needs class_token=True")
    (tmp_path / "list.json").write_text("[1, 2]")
    one_line(run("info", str(SAMPLE), "--config", str(tmp_path / "list.json")), 1, "must hold a JSON object")
    one_line(run("info", str(SAMPLE), "--config", str(tmp_path / "missing.json")), 2, "does not exist")


def test_cli_malicious_checkpoint(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'owned')!r}, 'w')",))

    torch.save({"state_dict": {}, "x": Payload()}, tmp_path / "evil.pt")
    one_line(run("info", str(tmp_path / "evil.pt")), 1, "refused to load")
    assert not (tmp_path / "owned").exists()


def test_cli_output_is_a_directory_or_in_a_file(tmp_path: Path) -> None:
    (tmp_path / "out.onnx").mkdir()
    one_line(run("onnx", str(SAMPLE), "-o", str(tmp_path / "out.onnx"), "--force"), 2, "is a directory")
    (tmp_path / "afile").write_text("x")
    one_line(run("onnx", str(SAMPLE), "-o", str(tmp_path / "afile" / "m.onnx")), 2, "does not exist")


def test_cli_malformed_onnx(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07" + b"\xff" * 200)
    one_line(run("info", str(tmp_path / "junk.onnx")), 1, "not a readable ONNX model")
    (tmp_path / "empty.onnx").write_bytes(b"")
    one_line(run("verify", str(tmp_path / "empty.onnx")), 1, "is empty")


def test_cli_external_data_outside_folder(spec_export, tmp_path: Path) -> None:
    import onnx

    _, _, path = spec_export
    proto = onnx.load(str(path))
    (tmp_path / "outside.data").write_bytes(b"\0" * 1024)
    for tensor in proto.graph.initializer:  # written by hand, as an attacker would: onnx.save refuses '..'
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", "../outside.data"), ("offset", "0"), ("length", "4")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    evil = tmp_path / "sub" / "evil.onnx"
    evil.parent.mkdir()
    evil.write_bytes(proto.SerializeToString())
    one_line(run("verify", str(evil)), 1, "outside the model's folder")
    one_line(run("info", str(evil)), 1, "outside the model's folder")


def test_cli_wrong_channels_and_oversized_image(sample_onnx: Path, tmp_path: Path) -> None:
    from PIL import Image

    onnx_path = sample_onnx
    Image.fromarray(np.zeros((3000, 3000), np.uint8)).save(tmp_path / "big.png")
    one_line(run("predict", str(onnx_path), str(tmp_path / "big.png")), 1, "over the limit of 16,640")
    Image.fromarray(np.zeros((20, 20, 2), np.uint8)[..., 0]).save(tmp_path / "ok.png")
    assert run("predict", str(onnx_path), str(tmp_path / "ok.png")).exit_code == 0


def test_failed_verify_keeps_previous_report(sample_onnx: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import vitexport.verify.sweep as verify_mod

    onnx_path = tmp_path / "d.onnx"
    shutil.copy(sample_onnx, onnx_path)
    report = tmp_path / "report.json"
    report.write_text("previous")
    one_line(run("verify", str(onnx_path), "--json", str(report)), 2, "pass --force")
    assert report.read_text() == "previous"

    def crash(*a, **k):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(verify_mod, "verify", crash)
    one_line(run("verify", str(onnx_path), "--json", str(report), "--force"), 1, "injected failure")
    assert report.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "report.json"]
