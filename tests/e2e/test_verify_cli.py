"""`vitexport verify` on the command line: the table, the verdict and its exit code, --json and --plot, and
engines that cannot run here (exit 2, one line)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.models import CONFIGS
from tests.helpers.onnx_edits import edited, resize_export, set_resize_attr, spec_export
from vitexport._util.geometry import grid_size
from vitexport.cli import cli
from vitexport.engines.ort import probe_provider
from vitexport.model.config import ViTConfig

CUDA = probe_provider("cuda")[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(.onnx, checkpoint) of the spec model."""
    return spec_export(tmp_path_factory.mktemp("verify-cli"))


@pytest.mark.skipif(CUDA, reason="this machine has a usable CUDA provider")
def test_cuda_unavailable_exits_2(sample_onnx: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", str(sample_onnx), "--provider", "cuda"])
    assert result.exit_code == 2
    assert "CUDAExecutionProvider" in result.stderr and "--provider cpu" in result.stderr
    assert result.stderr.count("\n") == 1


def test_rows_show_max_abs_cosine_and_the_error_relative_to_the_outputs_scale(sample_onnx: Path,
                                                                              tmp_path: Path) -> None:
    """Each row's rel is max|d| / max|ref| (the report's rel_to_scale), not the element-by-element max_rel; the
    JSON report keeps max_rel (schema 1: fields only added) beside ref_scale and rel_to_scale."""
    report = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["verify", str(sample_onnx), "--provider", "cpu", "--sizes", "28x28,9x30",
                                      "--batch-sizes", "1,2", "--json", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["schema_version"] == 1
    rows = re.findall(r"max\|d\| (\S+)  rel (\S+)  cos (\S+)", result.stdout)
    assert len(rows) == len(data["cases"]) >= 4
    for (max_abs, rel, cos), case in zip(rows, data["cases"], strict=True):
        assert case["rel_to_scale"] == pytest.approx(case["max_abs"] / case["ref_scale"])
        assert (max_abs, rel, cos) == (f"{case['max_abs']:.2e}", f"{case['rel_to_scale']:.2e}", f"{case['cosine']:.6f}")
    assert any(c["max_rel"] > 10 * c["rel_to_scale"] for c in data["cases"])  # what the rows used to show
    assert "(rel: max|d| / max|ref|, the output's scale)" in result.stdout


@pytest.mark.slow
def test_cli_verify_pass_fail_json_and_plot(good, tmp_path, monkeypatch) -> None:
    import vitexport.verify.sweep as verify_mod

    path, checkpoint = good
    good_resize = resize_export(checkpoint)
    runner = CliRunner()
    # a small heatmap grid: heatmap_sizes itself is checked in test_heatmap_sweep_reuses_the_reports_engine...
    monkeypatch.setattr(verify_mod, "heatmap_sizes", lambda native, patch: ([1, 28, 45], [7, 28, 112]))
    result = runner.invoke(cli, ["verify", str(path), "--provider", "cpu", "--json", str(tmp_path / "r.json"),
                                 "--plot", str(tmp_path / "h.png")])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.stdout and "[  1/" in result.stdout and "running on CPUExecutionProvider" in result.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] and data["schema_version"] == 1 and len(data["cases"]) >= 12
    assert {"max_abs", "max_rel", "cosine", "top1_agreement", "nonfinite", "runtime_ms", "torch_ms", "grid",
            "padded_size", "seq_len", "provider", "ref_scale", "rel_to_scale"} <= set(data["cases"][0])
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"

    assert "static checks  ok (dynamic axes; portable resampling: no Resize, 2 MatMul" in result.stdout

    bad = edited(good_resize, tmp_path / "bad.onnx", set_resize_attr("antialias", 0))
    result = runner.invoke(cli, ["verify", str(bad), "--provider", "cpu"])
    assert result.exit_code == 1
    # the sizes named in the error are the failing rows of the table, which are where the grid shrinks
    listed = result.stderr.split("verification failed: mismatch at ")[1].split("; ")[0]
    named = {tuple(int(v) for v in hw.split("x")) for hw in listed.split(", ")}
    rows = [m.groups() for m in re.finditer(r"^\[\s*\d+/\d+\] (ok  |FAIL) \S+\s+(\d+)x(\d+)", result.stdout, re.M)]
    failed = {(int(h), int(w)) for status, h, w in rows if status == "FAIL"}
    native = ViTConfig(**CONFIGS["spec_cls"]).grid_size
    shrinking = {(int(h), int(w)) for _, h, w in rows
                 if any(g < n for g, n in zip(grid_size(int(h), int(w), (8, 8)), native, strict=True))}
    assert rows and named == failed == shrinking and named
    assert "; likely cause on cpu: all " in result.stderr and result.stderr.rstrip().endswith("see the table above")

    result = runner.invoke(cli, ["verify", str(path), "--sizes", "28xx", "--provider", "cpu"])
    assert result.exit_code == 2
    result = runner.invoke(cli, ["verify", str(tmp_path / "missing.onnx")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    (tmp_path / "trunc.onnx").write_bytes(path.read_bytes()[:5000])
    result = runner.invoke(cli, ["verify", str(tmp_path / "trunc.onnx")])
    assert result.exit_code == 1 and "not a readable ONNX model" in result.stderr


def test_missing_openvino_exits_2_with_the_install_command(sample_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    result = CliRunner().invoke(cli, ["verify", str(sample_onnx), "--provider", "openvino"])
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "pip install 'vitexport[openvino]'" in result.stderr
