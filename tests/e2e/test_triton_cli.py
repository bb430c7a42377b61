"""`vitexport triton` on the command line: what it prints, and one-line errors with exit 2 for what the user must fix
(the repositories: tests/unit/serving/test_triton_repository.py; on a real server: tests/e2e/test_triton.py)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tests.helpers.models import SAMPLES
from vitexport.cli import cli


def triton(*args: str):
    return CliRunner().invoke(cli, ["triton", *args])


def test_writes_and_prints_the_repository(sample_onnx: Path, tmp_path: Path) -> None:
    result = triton(str(sample_onnx), "-o", str(tmp_path / "repo"), "--backend", "python", "--instances", "2")
    assert result.exit_code == 0, result.output
    assert "python backend, max_batch_size 16, 2 x KIND_CPU" in result.output
    assert "pixel_values FP32 [1, -1, -1], image BYTES [1]  (send one)" in result.output
    assert f"tritonserver --model-repository {(tmp_path / 'repo').resolve()}" in result.output
    assert (tmp_path / "repo" / "digits-vit" / "1" / "model.py").is_file()


def test_usage_errors_exit_2_with_the_fix(sample_onnx: Path, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert triton(str(sample_onnx), "-o", repo).exit_code == 0
    cases = [
        ([str(sample_onnx), "-o", repo], "exists; pass --force"),
        ([str(sample_onnx), "-o", repo, "--name", "a/b"], "cannot be a model name"),
        ([str(sample_onnx), "-o", repo, "--name", "m", "--max-tokens", "64"], "applies to --backend python"),
        ([str(SAMPLES / "digits-vit.pt"), "-o", repo, "--name", "m"], "vitexport onnx"),
        ([str(sample_onnx)], "Missing option '-o'"),
    ]
    for args, message in cases:
        result = triton(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["digits-vit"]
