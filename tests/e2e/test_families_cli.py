"""timm's other classes on the command line, as a user holding DINOv3 weights runs them: the weights alone are refused
with the way in, ``--config '{"architecture": ...}'`` exports them (``--output features`` / ``tokens`` too), and
`verify` (OpenVINO, the reference evaluator), `predict --json` and `info` take the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.helpers.families import REPRESENTATIVES, config
from tests.helpers.models import perturb_
from vitexport.cli import cli
from vitexport.model.family_models import model_for

NAME = "dinov3"  # timm's Eva: normalized-coordinate RoPE, registers, layer scale (a head of 5 classes here)


def weights(tmp_path: Path) -> tuple[Path, str]:
    """The representative's weights as a user holds them (safetensors, no config), and the --config that loads them."""
    torch.manual_seed(0)
    model = perturb_(model_for(config(NAME)), 0)
    path = tmp_path / "dinov3.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    arch, overrides = REPRESENTATIVES[NAME]
    return path, json.dumps({"architecture": arch, **overrides})


@pytest.mark.slow
def test_dinov3_weights_export_verify_and_predict_features(tmp_path: Path) -> None:
    path, cfg = weights(tmp_path)
    runner = CliRunner()
    refused = runner.invoke(cli, ["onnx", str(path), "-o", str(tmp_path / "x.onnx")])
    assert refused.exit_code == 1 and "timm's Eva, not a plain ViT" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()

    onnx_path = tmp_path / "features.onnx"
    result = runner.invoke(cli, ["onnx", str(path), "--config", cfg, "--output", "features", "--out", str(onnx_path)])
    assert result.exit_code == 0, result.output
    assert "output         features ['batch', 64] (eva)" in result.stdout
    assert "rotary embeddings: 2 Sin/Cos, angles follow the input shape" in result.stdout
    info = json.loads(runner.invoke(cli, ["info", str(onnx_path), "--json"]).stdout)
    assert info["metadata"]["model_class"] == "eva" and info["metadata"]["output"] == "features"
    for provider in ("openvino", "reference"):
        report = runner.invoke(cli, ["verify", str(onnx_path), "--provider", provider, "--sizes", "17x45,7x5,40x56",
                                     "--batch-sizes", "1,3"])
        assert report.exit_code == 0, report.output
        assert "output features" in report.stdout

    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 45, 3), dtype=np.uint8)).save(image)
    predicted = runner.invoke(cli, ["predict", str(onnx_path), str(image), "--provider", "cpu", "--json"])
    assert predicted.exit_code == 0, predicted.output
    [entry] = json.loads(predicted.stdout)
    assert entry["output"] == "features" and entry["top_k"] == [] and len(entry["embedding"]) == 64

    ts = tmp_path / "tokens.ts"
    result = runner.invoke(cli, ["torchscript", str(path), "--config", cfg, "--output", "tokens", "-o", str(ts)])
    assert result.exit_code == 0, result.output
    assert "output         tokens ['batch', 'tokens', 64] (eva)" in result.stdout
    report = runner.invoke(cli, ["verify", str(ts), "--sizes", "17x45,7x5", "--batch-sizes", "2"])
    assert report.exit_code == 0 and "output tokens" in report.stdout, report.output


def test_logits_of_a_headless_model_is_refused_in_one_line(tmp_path: Path) -> None:
    path, cfg = weights(tmp_path)
    headless = tmp_path / "headless.safetensors"  # the same weights without the head
    save_file({k: v for k, v in load_file(str(path)).items() if not k.startswith("head.")}, str(headless))
    config_json = json.dumps({**json.loads(cfg), "num_classes": 0})
    result = CliRunner().invoke(cli, ["onnx", str(headless), "--config", config_json, "--output", "logits",
                                      "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and not (tmp_path / "m.onnx").exists()
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "no classification head" in result.stderr and "--output features" in result.stderr
