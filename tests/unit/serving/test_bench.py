"""`bench`: parity of every engine at the benched sizes, wrong engines marked, the one-line recommendation.
No timed assertions: only which engine is recommended given timings, and that parity is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.engines import make_onnx_runtime_wrong
from tests.helpers.models import needs_openvino
from vitexport.serving.bench import BenchCase, BenchEngine, BenchReport, bench, default_bench_sizes, recommend

SIZES = [(28, 28), (17, 45), (5, 70)]  # native, not multiples of the patch, smaller than a patch in height


def test_bench_all_checks_every_engine_against_pytorch_at_every_size(sample_onnx: Path) -> None:
    needs_openvino()
    report = bench(str(sample_onnx), SIZES, (1, 3), provider="all", warmup=0, iters=1)
    names = [e.name for e in report.engines]
    assert {"cpu", "openvino"} <= set(names)
    assert report.parity_reference.startswith("PyTorch eager")
    assert len(report.cases) == len(SIZES) * 2 * len(names)
    for case in report.cases:
        assert case.parity_ok is True and 0 <= case.parity_max_abs < 2e-5, case
    assert report.recommendation.split()[:3] == ["recommendation:", "--provider", report.recommendation.split()[2]]
    assert report.recommendation.split()[2] in names and "right at every benched size" in report.recommendation


@pytest.mark.slow
def test_a_wrong_engine_is_marked_and_never_recommended(sample_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime made wrong by 1e-3 on one logit: every case says so, OpenVINO is picked."""
    needs_openvino()
    make_onnx_runtime_wrong(monkeypatch, 1e-3)
    report = bench(str(sample_onnx), SIZES[:2], (2,), provider="all", warmup=0, iters=1)
    by_engine = {n: [c for c in report.cases if c.engine == n] for n in ("cpu", "openvino")}
    assert all(c.parity_ok is False and c.parity_max_abs > 5e-4 for c in by_engine["cpu"])
    assert all(c.parity_ok is True for c in by_engine["openvino"])
    assert report.recommendation.startswith("recommendation: --provider openvino")
    assert "cpu was WRONG at 28x28 batch 2, 17x45 batch 2" in report.recommendation


def _case(engine: str, ms: float, ok: bool | None, h: int = 8) -> BenchCase:
    return BenchCase(h, 8, 1, engine, ms, ms, 1e3 / ms, parity_max_abs=0.0 if ok else 1.0, parity_ok=ok)


def test_recommend_takes_the_fastest_correct_engine_by_geometric_mean() -> None:
    report = BenchReport("m", [], 0, 1, None, engines=[BenchEngine(n, []) for n in ("a", "b", "c")],
                         parity_reference="PyTorch")
    # a: fastest but wrong at one case; b: 2x slower than c at one case, 2x faster at the other -> tie broken
    # by the third case, where b is 4x faster
    report.cases = [_case("a", 1, True, 8), _case("b", 10, True, 8), _case("c", 5, True, 8),
                    _case("a", 1, False, 9), _case("b", 5, True, 9), _case("c", 10, True, 9),
                    _case("a", 1, True, 10), _case("b", 5, True, 10), _case("c", 20, True, 10)]
    line = recommend(report)
    assert line.startswith("recommendation: --provider b (fastest correct engine here: 1.59x c,")
    assert line.endswith("a was WRONG at 9x8 batch 1")
    for c in report.cases:
        c.parity_ok = False
    assert recommend(report).startswith("recommendation: none - no engine matched the reference")
    report.parity_reference = ""
    for c in report.cases:
        c.parity_ok = None
    assert recommend(report).startswith("recommendation: --provider a (fastest engine here")
    assert "parity not checked" in recommend(report)
    assert "here: 6.30x b, 10.00x c, geometric mean over 3 cases" in recommend(report)  # (1/.004)^(1/3), 1000^(1/3)


@pytest.mark.slow
def test_bench_all_on_an_int8_model_compares_engines_with_the_first(sample_onnx: Path, tmp_path: Path) -> None:
    """A quantized artifact cannot be rebuilt in PyTorch (its weights lost their names): bench compares every engine
    with the first one instead of refusing the whole run (it exited 2 with verify's --checkpoint advice)."""
    needs_openvino()
    from vitexport.export.optimize import quantize_onnx

    int8 = tmp_path / "m.int8.onnx"
    quantize_onnx(sample_onnx, int8)
    report = bench(str(int8), SIZES[:2], (2,), provider="all", warmup=0, iters=1)
    assert report.parity_reference.startswith("engine cpu (the artifact was quantized by ONNX Runtime")
    assert {c.engine for c in report.cases} >= {"cpu", "openvino"}
    for case in report.cases:
        assert case.parity_ok is not None and case.parity_max_abs is not None, case
    assert all(c.parity_max_abs == 0.0 for c in report.cases if c.engine == "cpu")


def test_default_sizes_come_from_the_metadata_with_one_session(sample_onnx: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import vitexport.engines.ort as ort_engine
    from vitexport.onnx.graph import read_metadata
    from vitexport.serving.defaults import BENCH_BATCH_SIZES

    sessions: list[str] = []
    real = ort_engine.create_session

    def counting(path, provider, *args, **kwargs):
        sessions.append(str(path))
        return real(path, provider, *args, **kwargs)

    monkeypatch.setattr(ort_engine, "create_session", counting)
    report = bench(str(sample_onnx), iters=2, warmup=0, provider="cpu")
    assert sessions == [str(sample_onnx)]  # the default sizes cost no session of their own
    expected = [(h, w, b) for h, w in default_bench_sizes(read_metadata(sample_onnx)) for b in BENCH_BATCH_SIZES]
    assert [(c.height, c.width, c.batch) for c in report.cases] == expected
    assert report.providers == ["CPUExecutionProvider"] and [e.name for e in report.engines] == ["cpu"]
    assert {c.engine for c in report.cases} == {"cpu"} and not report.parity_reference  # one engine: no parity
    assert all(c.runtime_median_ms > 0 and c.runtime_p90_ms >= c.runtime_median_ms for c in report.cases)
    data = report.to_json()  # `bench --json`
    assert data["engines"] == [{"name": "cpu", "providers": ["CPUExecutionProvider"],
                                "version": report.engines[0].version, "notes": []}]
    assert [c["engine"] for c in data["cases"]] == ["cpu"] * len(expected)
