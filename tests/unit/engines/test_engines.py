"""Engines: the interface, one decision for `auto`, ORT's logger level, and the torch-free serving side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import vitexport.engines.ort as ort_engine
from tests.helpers.models import ROOT, needs_openvino, predict_in_threads
from vitexport._util.errors import EngineError, EngineUnavailable, EnvironmentProblem
from vitexport.engines import Engine, create_engine
from vitexport.serving.predictor import Predictor
from vitexport.verify.cases import Case

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
    with pytest.raises(EnvironmentProblem, match="unknown engine 'tflite'; use one of cuda, tensorrt, cpu, openvino"):
        create_engine("tflite")


def test_auto_is_one_structured_decision(sample_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_auto_provider decides for the Predictor and verify alike; its reason carries no advice."""
    from vitexport.verify.sweep import verify

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
    assert report.sessions[0]["warnings"][0] == "auto: running on the CPU (no GPU in this test)"
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
    import importlib.util

    engines = ("openvino", "reference") if importlib.util.find_spec("openvino") else ("reference",)
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import vitexport.serving.bench, vitexport.verify.diagnose, vitexport.verify.heatmap\n"
        "import vitexport._util.files, vitexport._util.geometry\n"
        "import vitexport.engines.openvino, vitexport.engines.ort, vitexport.engines.reference\n"
        "from vitexport.export.optimize import optimize_onnx\n"
        "from vitexport.runtime import Predictor\n"
        f"optimize_onnx({str(sample_onnx)!r}, {str(tmp_path / 'opt.onnx')!r})\n"
        f"p = Predictor({str(tmp_path / 'opt.onnx')!r}, provider='cpu')\n"
        "assert p.predict(np.zeros((28, 28), np.uint8)).top_k\n"
        f"for engine in {engines!r}:\n"
        f"    assert Predictor({str(sample_onnx)!r}, provider=engine).predict(np.zeros((9, 30), np.uint8)).top_k\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------------
# the registry: every engine behind one request
# ---------------------------------------------------------------------------
def test_all_loads_every_usable_engine_and_says_why_others_are_skipped(sample_onnx: Path) -> None:
    needs_openvino()
    from vitexport.engines import PROVIDER_CHOICES, load_engines, resolve_request

    assert {"openvino", "reference"} <= set(PROVIDER_CHOICES) and PROVIDER_CHOICES[0] == "auto"
    assert [name for name, _ in resolve_request("all")] == ["cuda", "tensorrt", "cpu", "openvino", "reference"]
    loaded, skipped = load_engines(str(sample_onnx), "all")
    names = [e.name for e, _ in loaded]
    assert {"cpu", "openvino", "reference"} <= set(names)
    for name in ("cuda", "tensorrt"):  # loaded where a GPU works, else skipped with the reason
        assert name in names or any(s.startswith(f"{name}: ") and "could not" in s for s in skipped), (name, skipped)
    serving, _ = load_engines(str(sample_onnx), "all", serving_only=True)
    assert "reference" not in [e.name for e, _ in serving] and "openvino" in [e.name for e, _ in serving]
    with pytest.raises(EnvironmentProblem, match="unknown provider 'gpu'"):
        resolve_request("gpu")
    with pytest.raises(EnvironmentProblem, match="a Predictor runs on one engine; name one instead of 'all'"):
        Predictor(str(sample_onnx), provider="all")


def test_openvino_runs_in_f32_reads_the_metadata_and_says_so(sample_onnx: Path) -> None:
    ov = needs_openvino()
    from vitexport.onnx.graph import read_metadata

    engine = create_engine("openvino")
    assert engine.available() == (True, "")
    engine.load(str(sample_onnx))
    assert engine.metadata == read_metadata(sample_onnx) and engine.metadata["native_grid"] == [3, 3]
    assert engine.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    entry = engine.describe()
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert entry["precision"] == "f32" and entry["version"] == f"openvino {ov.__version__.split('-')[0]}"
    assert entry["notes"][0].startswith(f"inference precision forced to f32 (INFERENCE_PRECISION_HINT); this "
                                        f"device's default is {default}")
    # a grid other than native (5x3, resampled embeddings), batch 3: bf16 would be off by ~1e-2
    x = np.random.default_rng(1).standard_normal((3, 1, 40, 17)).astype(np.float32)
    ref = create_engine("cpu").load(str(sample_onnx)).run(x)
    out = engine.run(x)
    assert out.dtype == np.float32 and out.shape == (3, 10)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-4)


def test_openvino_stays_right_after_a_first_image_of_one_token(tmp_path_factory: pytest.TempPathFactory) -> None:
    """OpenVINO 2026.4 computes attention wrongly at longer sequences when a compiled model's first run had one
    token (measured: max |d| 3.0 on this model without the engine's priming run): a model without prefix
    tokens, whose first image is one patch, then larger images."""
    needs_openvino()
    import torch

    from tests.helpers.shared import no_prefix_model

    path, model = no_prefix_model(tmp_path_factory, "avg")
    engine = create_engine("openvino").load(str(path))
    for h, w in [(1, 1), (40, 40), (3, 3), (50, 31)]:
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            np.testing.assert_allclose(engine.run(x.numpy()), model(x).numpy(), atol=2e-5, rtol=1e-4)


def test_missing_openvino_is_an_environment_error_with_the_install_command(
    sample_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitexport.verify.sweep import verify

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    usable, reason = create_engine("openvino").available()
    assert not usable and "OpenVINO is not installed" in reason and "pip install 'vitexport[openvino]'" in reason
    with pytest.raises(EngineUnavailable, match=r"pip install 'vitexport\[openvino\]'"):
        create_engine("openvino").load(str(sample_onnx))
    report = verify(sample_onnx, provider="all", sizes=[(28, 28)], batch_sizes=(1,))
    assert "openvino" not in [s["name"] for s in report.sessions] and report
    assert any(s.startswith("openvino: OpenVINO is not installed") for s in report.skipped_providers)


def test_predictor_on_openvino_equals_predictor_on_ort(sample_onnx: Path) -> None:
    """Mixed sizes, batches of equal sizes, 8 threads sharing one Predictor: OpenVINO gives ORT's results."""
    needs_openvino()
    on_ov = Predictor(str(sample_onnx), provider="openvino")
    on_ort = Predictor(str(sample_onnx), provider="cpu")
    assert on_ov.provider == "openvino" and on_ov.providers == ["OpenVINO CPU"] and on_ov.provider_note == ""
    rng = np.random.default_rng(3)
    requests = [[rng.integers(0, 256, (int(rng.integers(1, 60)), int(rng.integers(1, 60))), dtype=np.uint8)
                 for _ in range(int(rng.integers(1, 4)))] for _ in range(30)]
    requests.append([requests[0][0]] * 5 + [requests[1][0]] * 2)  # two groups of equal sizes: batches 5 and 2
    expected = [on_ov.predict(r) for r in requests]
    for preds, request in zip(expected, requests, strict=True):
        for p, q in zip(preds, on_ort.predict(request), strict=True):
            assert p.size == q.size and [t["index"] for t in p.top_k] == [t["index"] for t in q.top_k]
            np.testing.assert_allclose(p.output, q.output, atol=2e-5, rtol=1e-4)
    for (_, i), outs in predict_in_threads(on_ov, requests).items():  # 8 threads share one Predictor
        for a, b in zip(outs, expected[i], strict=True):
            assert np.array_equal(a, b.output)


# ---------------------------------------------------------------------------
# the ONNX reference evaluator
# ---------------------------------------------------------------------------
def test_reference_engine_takes_a_reduced_sweep_and_says_so(sample_onnx: Path) -> None:
    from vitexport.model.config import ViTConfig
    from vitexport.onnx.graph import read_metadata
    from vitexport.verify.cases import default_cases, reduced_cases
    from vitexport.verify.sweep import verify

    cfg = ViTConfig.from_dict(read_metadata(sample_onnx)["config"])
    full = default_cases(cfg)
    report = verify(sample_onnx, provider="reference")
    assert report, [(c.height, c.width, c.max_abs) for c in report.failures]
    ran = [Case(c.height, c.width, c.batch, c.input_kind) for c in report.cases]
    assert ran == reduced_cases(cfg, full) and 0 < len(ran) < len(full)
    assert len([c for c in ran if c.batch > 1]) == 1 and all(c.input_kind == "random" for c in ran)
    grids = {tuple(c.grid) for c in report.cases}
    assert any(g[0] < 3 for g in grids) and any(g[0] > 3 for g in grids) and (3, 3) in grids  # down, up, native
    notes = report.sessions[0]["notes"]
    assert report.sessions[0]["version"].startswith("onnx ")
    assert notes and notes[0].startswith(f"reduced sweep: {len(ran)} of {len(full)} cases")
    explicit = verify(sample_onnx, provider="reference", sizes=[(56, 56)], batch_sizes=(2,))  # as asked: no reduction
    assert [(c.height, c.width, c.batch) for c in explicit.cases] == [(56, 56, 2)] and explicit
    assert not explicit.sessions[0]["notes"]


@pytest.mark.slow  # the reference evaluator on a 6-block model, traced by tracemalloc
def test_reference_engine_drops_results_after_their_last_reader(tmp_path: Path) -> None:
    """Same output, bit for bit, as the evaluator's own run, in a fraction of its memory: the evaluator keeps
    every block's activations to the end; the engine keeps about one block's (the Loop bodies' outer reads
    included, or the chunked attention would miss its keys)."""
    import tracemalloc

    from tests.helpers.models import make_model
    from vitexport.export.exporter import export_onnx

    path = tmp_path / "deep.onnx"
    export_onnx(make_model(dict(img_size=32, patch_size=8, num_classes=5, embed_dim=64, depth=6, num_heads=2),
                           seed=9), path)
    engine = create_engine("reference").load(str(path))
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 120)).astype(np.float32)
    peaks, outputs = [], []
    for run in (engine.run, lambda a: engine.evaluator.run(None, {"pixel_values": a})[0]):
        tracemalloc.start()
        outputs.append(run(x))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert np.array_equal(outputs[0], outputs[1])
    assert peaks[0] < 0.4 * peaks[1], peaks


def test_reference_engine_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")], "contrib",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    save(model, str(tmp_path / "contrib.onnx"))
    with pytest.raises(EngineError, match=r"standard ONNX ops only; .* holds com\.microsoft\.FusedMatMul"):
        create_engine("reference").load(str(tmp_path / "contrib.onnx"))
    with pytest.raises(EnvironmentProblem, match="has no thread setting"):
        create_engine("reference", threads=2)


# ---------------------------------------------------------------------------
# onnxruntime-gpu before the CUDA antialias fix
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("version, resample, warned", [
    ("1.23.2", "resize", True), ("1.20.0", "resize", True), ("1.24.0.dev20251101", "resize", True),
    ("1.24.1", "resize", False), ("1.31.1", "resize", False), ("1.23.2", "portable", False),
])
def test_old_onnxruntime_gpu_warns_for_resize_models_on_cuda(version: str, resample: str, warned: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxruntime, "__version__", version)
    issues = ort_engine.OrtEngine("cuda").known_issues({"resample": resample})
    assert bool(issues) == warned, issues
    if warned:
        assert issues[0].startswith(f"onnxruntime {version} computes antialiased cubic Resize wrongly on CUDA")
        assert ">= 1.24.1" in issues[0] and "--resample portable" in issues[0]
    assert ort_engine.OrtEngine("tensorrt").known_issues({"resample": resample}) == issues
    assert ort_engine.OrtEngine("cpu").known_issues({"resample": resample}) == []
    assert bool(ort_engine.OrtEngine("cuda").known_issues({})) == warned or resample == "portable"  # no key: Resize


def test_version_tuple() -> None:
    assert ort_engine.version_tuple("1.24.1") == (1, 24, 1)
    assert ort_engine.version_tuple("1.24.1rc1") == (1, 24, 1)
    assert ort_engine.version_tuple("1.24.0.dev20251101+cu12") == (1, 24, 0)
    assert ort_engine.version_tuple("1.23.2") < ort_engine.CUDA_ANTIALIAS_FIX <= ort_engine.version_tuple("1.24.1")


