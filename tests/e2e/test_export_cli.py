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
    assert result.exit_code == 1 and "needs opset >= 18" in result.stderr
    result = runner.invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "--batch-size", "0"])
    assert result.exit_code == 2


def test_cli_onnx_to_unwritable_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["onnx", str(SAMPLES / "digits-vit.pt"), "-o", str(tmp_path / "no" / "m.onnx")])
    assert result.exit_code == 1 and "does not exist; create it first" in result.stderr


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
