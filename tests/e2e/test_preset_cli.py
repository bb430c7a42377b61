"""`vitexport verify|bench --preset NAME --random-weights`: "does this architecture export and run here" is one
command. The preset is exported to a temporary ONNX file (`--config`: overrides of its options), verified or timed,
and the file is removed at the end; the usage rules are those of `onnx --preset`."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from vitexport.cli import cli

SMALL = '{"depth": 1, "embed_dim": 64, "num_heads": 2, "num_classes": 5, "img_size": 32, "patch_size": 8}'


def left_in(folder: Path) -> list[Path]:
    """What a command left in the temporary folder; torch's own compile cache (``torchinductor_<user>``, made there by
    the first export of a process, so only when this test runs first in its worker) is not vitexport's."""
    return [p for p in folder.iterdir() if not p.name.startswith("torchinductor_")]


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder the commands use, empty (to see that nothing is left there), and the working folder."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


@pytest.mark.parametrize("command", ["verify", "bench"])
@pytest.mark.parametrize("args, message", [
    ([], "pass MODEL, or --preset NAME --random-weights (not both)"),
    (["m.onnx", "--preset", "vit_tiny_patch16_224"], "(not both)"),
    (["m.onnx", "--random-weights"], "--random-weights applies to --preset"),
    (["--preset", "vit_tiny_patch16_224"], "add --random-weights"),
    (["--preset", "vit_tiy_patch16_224", "--random-weights"], "did you mean 'vit_tiny_patch16_224'"),
    (["--preset", "vit_tiny_patch16_224", "--random-weights", "--config", '{"architecture": "vit_small_patch16_224"}'],
     "the architecture is --preset's"),
])
def test_preset_usage_errors(temp_dir: Path, command: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, [command, *args])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "Traceback" not in result.output and left_in(temp_dir) == []


def test_options_for_files_only_are_refused_with_a_preset(temp_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", "--preset", "vit_tiny_patch16_224", "--random-weights",
                                      "--checkpoint", "c.pt"])
    assert result.exit_code == 2 and "--checkpoint applies to MODEL, not to --preset" in result.stderr, result.output
    result = CliRunner().invoke(cli, ["bench", "m.onnx", "--config", '{"depth": 2}'])
    assert result.exit_code == 2 and "--config applies to --preset" in result.stderr, result.output


@pytest.mark.slow
def test_verify_a_preset_in_one_command(temp_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", "--preset", "vit_tiny_patch16_224", "--random-weights",
                                      "--config", SMALL, "--sizes", "32x32,19x45", "--batch-sizes", "1,2"])
    assert result.exit_code == 0, result.output
    assert re.search(r"exported +vit_tiny_patch16_224 with random weights \(seed 0\) to a temporary ONNX file",
                     result.stderr), result.stderr
    assert "vitexport onnx --preset vit_tiny_patch16_224 --random-weights --config" in result.stderr
    assert "vit_tiny_patch16_224.onnx" in result.stdout and "PASSED         4/4 cases" in result.stdout, result.stdout
    assert left_in(temp_dir) == []  # the temporary export is gone


@pytest.mark.slow
def test_bench_a_preset_in_one_command(temp_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "--preset", "vit_tiny_patch16_224", "--random-weights",
                                      "--config", SMALL, "--sizes", "32x32", "--batch-sizes", "1",
                                      "--warmup", "0", "--iters", "2", "--provider", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout stays JSON: the export line is on stderr
    assert [(c["height"], c["width"], c["batch"]) for c in report["cases"]] == [(32, 32, 1)], report
    assert "vit_tiny_patch16_224.onnx" in report["model"]
    assert "with random weights" in result.stderr
    assert left_in(temp_dir) == []
