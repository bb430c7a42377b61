"""`vitexport bench` on the command line: the table per engine with parity and the recommendation, --json
(the library's typed report), and PyTorch compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.engines import make_onnx_runtime_wrong
from tests.helpers.models import needs_openvino
from vitexport.cli import cli


def test_bench_cli_compares_torch(sample_onnx: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", str(sample_onnx), "--sizes", "28x28,17x45", "--batch-sizes", "1,4",
                                      "--iters", "3", "--warmup", "1", "--compare-torch", "--provider", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "cpu median ms" in result.stdout and "torch median ms" in result.stdout and "cpu speed-up" in result.stdout
    assert len([x for x in result.stdout.splitlines() if x.strip().startswith(("28x28", "17x45"))]) == 4


def test_bench_json_and_table_on_every_serving_engine(sample_onnx: Path) -> None:
    needs_openvino()
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", str(sample_onnx), "--provider", "all", "--sizes", "28x28,17x45",
                                 "--batch-sizes", "1,3", "--iters", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # nothing else on stdout (onnxruntime prints failed GPU providers)
    names = [e["name"] for e in data["engines"]]
    assert {"cpu", "openvino"} <= set(names) and "reference" not in names
    assert all(set(e) == {"name", "providers", "version", "notes"} for e in data["engines"])
    assert [(c["height"], c["width"], c["batch"], c["engine"]) for c in data["cases"]] == [
        (h, w, b, n) for h, w in ((28, 28), (17, 45)) for b in (1, 3) for n in names]
    table = runner.invoke(cli, ["bench", str(sample_onnx), "--provider", "all", "--sizes", "17x45",
                                "--batch-sizes", "2", "--iters", "1", "--warmup", "0"])
    assert table.exit_code == 0, table.stderr
    head = next(x for x in table.stdout.splitlines() if x.strip().startswith("size"))
    assert "cpu median ms" in head and "openvino median ms" in head
    assert any(x.startswith("engine openvino: OpenVINO CPU (openvino ") and "forced to f32" in x
               for x in table.stdout.splitlines())


@pytest.mark.slow
def test_a_wrong_engine_is_printed_wrong_and_not_recommended(sample_onnx: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime made wrong by 1e-3 on one logit: its row says WRONG, the last line recommends OpenVINO."""
    needs_openvino()
    make_onnx_runtime_wrong(monkeypatch, 1e-3)
    result = CliRunner().invoke(cli, ["bench", str(sample_onnx), "--provider", "all", "--sizes", "17x45",
                                      "--batch-sizes", "2", "--iters", "1", "--warmup", "0"])
    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("17x45"))
    assert row.count("WRONG") == 1 and row.count(" ok ") == 1
    assert result.stdout.rstrip().splitlines()[-1].startswith("recommendation: --provider openvino")
