"""Engines: the interface, one decision for `auto`, ORT's logger level, and the torch-free serving side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from conftest import ROOT

import vitexport.engines.ort as ort_engine
from vitexport.engines import Engine, create_engine
from vitexport.errors import EngineUnavailable, EnvironmentProblem
from vitexport.runtime import Predictor

CUDA_IN_BUILD = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def test_cpu_engine_loads_and_runs_like_the_predictor(sample_onnx: Path) -> None:
    engine = create_engine("cpu")
    assert isinstance(engine, Engine) and engine.name == "cpu"
    assert engine.available() == (True, "")
    engine.load(str(sample_onnx))
    assert engine.devices == ["CPUExecutionProvider"] and engine.metadata["native_grid"] == [3, 3]
    x = np.random.default_rng(0).standard_normal((2, 1, 17, 45)).astype(np.float32)
    out = engine.run(x)
    assert out.shape == (2, 10) and out.dtype == np.float32
    predictor = Predictor(str(sample_onnx), provider="cpu")
    np.testing.assert_array_equal(predictor.run_batch(x), out)
    entry = engine.describe()
    assert entry["name"] == "cpu" and entry["providers"] == ["CPUExecutionProvider"]
    with pytest.raises(EnvironmentProblem, match="unknown engine 'openvino'"):
        create_engine("openvino")


def test_auto_is_one_structured_decision(sample_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_auto_provider decides for the Predictor and verify alike; its reason carries no advice."""
    from vitexport.verify import verify

    choice = ort_engine.resolve_auto_provider()
    usable, _ = ort_engine.probe_provider("cuda")
    assert (choice.provider, choice.fell_back) == (("cuda", False) if usable else ("cpu", True))
    if choice.fell_back:
        assert "CUDAExecutionProvider" in choice.reason and "--provider" not in choice.reason
    monkeypatch.setattr(ort_engine, "probe_provider", lambda provider, debug=False: (False, "no GPU in this test"))
    forced = ort_engine.resolve_auto_provider()
    assert forced == ort_engine.AutoChoice("cpu", True, "no GPU in this test")
    predictor = Predictor(str(sample_onnx), provider="auto")
    assert predictor.provider == "cpu" and predictor.provider_note == "auto: running on the CPU (no GPU in this test)"
    report = verify(sample_onnx, provider="auto", sizes=[(28, 28)], batch_sizes=(1,))
    assert report.sessions[0]["warnings"][0] == "auto: verified on the CPU: no GPU in this test"
    assert report.sessions[0]["name"] == "cpu" and report.sessions[0]["requested"] == "auto"


def test_logger_severity_is_restored_to_what_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(onnxruntime, "set_default_logger_severity", lambda level: calls.append(level))
    before = ort_engine.set_logger_severity(1)  # as a user who wants ORT's info messages would
    try:
        with ort_engine.logger_severity(4):
            with ort_engine.logger_severity(3):
                assert calls[-1] == 3
            assert calls[-1] == 4
        assert calls == [1, 4, 3, 4, 1]
        if CUDA_IN_BUILD:  # a GPU session silences ORT while it is created, then gives the user's level back
            try:
                ort_engine.create_session(ort_engine._probe_model(), "cuda")
            except EngineUnavailable:
                pass  # no usable GPU here: the level must be restored all the same
            assert calls[-2:] == [4, 1]
    finally:
        ort_engine.set_logger_severity(before)


def test_serving_and_transforms_import_no_torch(sample_onnx: Path, tmp_path: Path) -> None:
    """Optimize, plot, files, engines, bench and the Predictor in a fresh interpreter: torch is never imported."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import vitexport.bench, vitexport.engines.ort, vitexport.files, vitexport.geometry, vitexport.plot\n"
        "from vitexport.optimize import optimize_onnx\n"
        "from vitexport.runtime import Predictor\n"
        f"optimize_onnx({str(sample_onnx)!r}, {str(tmp_path / 'opt.onnx')!r})\n"
        f"p = Predictor({str(tmp_path / 'opt.onnx')!r}, provider='cpu')\n"
        "assert p.predict(np.zeros((28, 28), np.uint8)).top_k\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
