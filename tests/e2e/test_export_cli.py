"""`vitexport onnx`, `torchscript` and `quantize` on the command line: what they print, the verify command they
print really runs and passes, and bad options end in one line with their exit code."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.models import SAMPLES
from vitexport import load_model
from vitexport.cli import cli
from vitexport.engines.ort import probe_provider

CUDA = probe_provider("cuda")[0]


def matmuls_with_weights(model) -> int:
    """qkv, proj, fc1 and fc2 per block, and the head: the MatMuls whose second input is a weight."""
    return 4 * model.config.depth + (1 if model.config.num_classes else 0)


@pytest.mark.slow
def test_cli_onnx_and_info(tmp_path: Path) -> None:
    out = tmp_path / "digits.onnx"
    runner = CliRunner()
    result = runner.invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    from vitexport import load_model
    from vitexport.model.vit import count_parameters

    parameters = count_parameters(load_model(SAMPLES / "digits-vit.pt"))
    for text in ["wrote", "opset          18", '"height"', f"parameters     {parameters:,}", "export time",
                 "portable resampling: no Resize, 2 MatMul, weights follow the input shape, native grid 3x3"]:
        assert text in result.stdout
    result = runner.invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "-o", str(out)])
    assert result.exit_code == 2 and "pass --force" in result.stderr
    result = runner.invoke(cli, ["info", str(out)])
    assert result.exit_code == 0
    assert "tensor         pixel_values [batch, 1, height, width]" in result.stdout
    assert "native grid 3x3" in result.stdout and "resampling     portable" in result.stdout
    assert "Resize" not in result.stdout
    data = json.loads(runner.invoke(cli, ["info", str(out), "--json"]).stdout)
    assert data["resample"] == "portable" and len(data["resample_matmuls"]) == 2 and data["resize"] == []
    resize = tmp_path / "resize.onnx"
    result = runner.invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "-o", str(resize), "--resample", "resize"])
    assert result.exit_code == 0, result.output
    assert "Resize: antialiased cubic a=-0.5, half_pixel, exclude_outside=1" in result.stdout
    result = runner.invoke(cli, ["info", str(resize)])
    assert "Resize 1" in result.stdout and "resampling     resize" in result.stdout
    result = runner.invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "--resample", "bilinear"])
    assert result.exit_code == 2 and "'bilinear' is not one of 'portable', 'resize'" in result.stderr
    result = runner.invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "-o", str(tmp_path / "x.onnx"),
                                 "--opset", "17"])
    assert result.exit_code == 2 and "needs opset >= 18" in result.stderr
    result = runner.invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "--batch-size", "0"])
    assert result.exit_code == 2


def test_cli_onnx_to_unwritable_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "-o", str(tmp_path / "no" / "m.onnx")])
    assert result.exit_code == 2 and "does not exist; create it first" in result.stderr


def _printed_verify_command(stdout: str) -> list[str]:
    """The `vitexport verify ...` command an export or quantize printed, as arguments (without `vitexport`)."""
    line = next(line for line in stdout.splitlines() if line.startswith("verify "))
    command = shlex.split(line.removeprefix("verify").split(" (")[0])
    assert command[:2] == ["vitexport", "verify"], line
    return command[1:]


@pytest.mark.slow
def test_cli_optimize_quantize_and_verify(sample_onnx: Path, tmp_path: Path) -> None:
    """Optimized and int8 models: the verify command each command prints is real (it runs and passes), and
    verifying them without --checkpoint is a usage error (exit 2)."""
    runner = CliRunner()
    sample = str(SAMPLES / "digits-vit.pt")
    opt = tmp_path / "opt.onnx"
    result = runner.invoke(cli, ["onnx", sample, "-o", str(opt), "--optimize", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "ONNX Runtime cpu optimization (extended)" in result.stdout and "attention      mha" in result.stdout
    command = _printed_verify_command(result.stdout)
    assert command == ["verify", str(opt), "--checkpoint", sample]
    result = runner.invoke(cli, [*command, "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["verify", str(opt), "--provider", "cpu"])
    assert result.exit_code == 2 and "--checkpoint" in result.stderr

    plain = tmp_path / "plain.onnx"
    shutil.copy(sample_onnx, plain)
    result = runner.invoke(cli, ["quantize", str(plain)])
    assert result.exit_code == 0, result.stderr
    expected = matmuls_with_weights(load_model(sample))
    assert f"quantized      {expected} MatMul" in result.stdout and "embedding resampling" in result.stdout
    q = tmp_path / "plain.int8.onnx"
    command = _printed_verify_command(result.stdout)
    assert command == ["verify", str(q), "--checkpoint", str(plain)]  # the real names: no placeholders
    result = runner.invoke(cli, [*command, "--provider", "cpu"])
    assert result.exit_code == 0 and "reference: checkpoint" in result.stdout, result.output
    result = runner.invoke(cli, ["verify", str(q), "--checkpoint", sample, "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["verify", str(q), "--provider", "cpu"])
    assert result.exit_code == 2 and "was quantized" in result.stderr and "--checkpoint" in result.stderr
    result = runner.invoke(cli, ["quantize", str(plain)])
    assert result.exit_code == 2 and "pass --force" in result.stderr
    result = runner.invoke(cli, ["onnx", sample, "-o", str(tmp_path / "c.onnx"), "--optimize", "cuda"])
    if CUDA:
        assert result.exit_code == 0 and "ONNX Runtime cuda optimization (extended)" in result.stdout, result.output
    else:
        assert result.exit_code == 2 and "needs it to run here" in result.stderr
        assert not (tmp_path / "c.onnx").exists()


PRESET_SMALL = '{"depth": 1, "embed_dim": 64, "num_heads": 2, "num_classes": 5}'


@pytest.mark.parametrize("args, message", [
    ([], "pass CHECKPOINT, or --preset NAME --random-weights (not both)"),
    (["x.pt", "--preset", "vit_tiny_patch16_224"], "(not both)"),
    (["x.pt", "--random-weights"], "--random-weights applies to --preset"),
    (["--preset", "vit_tiny_patch16_224", "--random-weights", "--ema"], "--ema applies to CHECKPOINT"),
    (["--preset", "vit_tiny_patch16_224"], "add --random-weights"),
    (["--preset", "vit_tiy_patch16_224", "--random-weights"], "did you mean 'vit_tiny_patch16_224'"),
])
@pytest.mark.parametrize("command", ["onnx", "torchscript"])
def test_cli_preset_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, args: list[str],
                                 message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [command, *args])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_onnx_preset_random_weights_runs_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    from vitexport import create_model, get_preset

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["onnx", "--preset", "vit_tiny_patch16_224", "--random-weights",
                                 "--config", PRESET_SMALL])
    assert result.exit_code == 0, result.output
    out = tmp_path / "vit_tiny_patch16_224.onnx"  # the default output: NAME.onnx here
    assert "weights        random (seed 0, preset vit_tiny_patch16_224)" in result.stdout
    info = runner.invoke(cli, ["info", str(out)])
    assert info.exit_code == 0 and "weights        random (seed 0, preset vit_tiny_patch16_224)" in info.stdout
    assert json.loads(runner.invoke(cli, ["info", str(out), "--json"]).stdout)["metadata"]["random_weights"] == {
        "seed": 0, "architecture": "vit_tiny_patch16_224"}
    rebuilt = create_model(get_preset("vit_tiny_patch16_224", **json.loads(PRESET_SMALL)), seed=0)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 45, 77, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = rebuilt(x).numpy()
    assert np.abs(sess.run(None, {"pixel_values": x.numpy()})[0] - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    verify = runner.invoke(cli, ["verify", str(out)])
    assert verify.exit_code == 0, verify.output
