"""ONNX Runtime's CUDA provider: verify, node placement and the Predictor's I/O binding.

Marked ``cuda`` and skipped, with the reason, where no CUDA session can run (no GPU, driver,
CUDA libraries or onnxruntime-gpu); on a GPU machine ``pytest -m cuda`` runs them
(scripts/gpu_check.sh does). The placement targets are asserted as the project states them:
every node on CUDA and Memcpy only at the graph's input/output. A failure there is a finding
to record, not a tolerance to widen.

``VITEXPORT_CUDA_TEST_PROVIDER=cpu`` runs the same tests on the CPU provider, to rehearse them
without a GPU: the verify and comparison tests pass there, and the I/O-binding test fails,
because the CPU Predictor binds nothing (which shows that test can fail).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from scripts.ort_placement import PROVIDERS, placement
from tests.helpers.models import CONFIGS, SAMPLES, make_model
from vitexport.serving.predictor import Predictor, probe_provider

PROVIDER = os.environ.get("VITEXPORT_CUDA_TEST_PROVIDER", "cuda")
USABLE, REASON = probe_provider(PROVIDER)
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not USABLE, reason=f"no usable CUDA provider here: {REASON}")]

CASES = [("sample", "float32"), ("sample", "float16"), ("small", "float32"), ("small", "float16")]
IDS = [f"{m}-{d}" for m, d in CASES]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """The shipped digits sample, and a small RGB model with a non-square 3x5 native grid and registers."""
    from vitexport import load_model
    from vitexport.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("cuda")
    models = {"sample": load_model(SAMPLES / "digits-vit.pt"), "small": make_model(CONFIGS["reg_noembed"], seed=5)}
    models["small"].meta = {"preprocess": {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
                            "labels": [f"c{i}" for i in range(7)]}
    out = {}
    for name, dtype in CASES:
        out[(name, dtype)] = folder / f"{name}-{dtype}.onnx"
        export_onnx(models[name], out[(name, dtype)], dtype=dtype)
    return out


@pytest.fixture(scope="module")
def placements(exports) -> dict[tuple[str, str], dict]:
    return {key: placement(str(path), PROVIDER) for key, path in exports.items()}


@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_verify_passes_on_cuda(exports, placements, key) -> None:
    from vitexport.verify.sweep import verify

    report = verify(exports[key], provider=PROVIDER)
    session = report.sessions[0]
    assert session["providers"][0] == PROVIDERS[PROVIDER], session
    failures = [(c.height, c.width, c.batch, c.input_kind, c.max_abs) for c in report.cases if not c.passed]
    assert report, f"{key}: {len(failures)}/{len(report.cases)} cases over tolerance: {failures}"
    assert len(report.cases) >= 12  # the model's own sweep: non-square, < one patch, larger than native
    if PROVIDER != "cpu":  # verify's profiled placement report agrees with the independent analysis
        place = placements[key]
        assert session["placement"].get(PROVIDERS[PROVIDER], 0) > 0, session
        assert session["memcpy_nodes"] == place["memcpy_nodes"], (session, place["memcpy_at_io_sites"])
        reported_cpu = sum(int(x.rsplit(" x", 1)[1]) for x in session["cpu_nodes"])
        assert reported_cpu == place["cpu_nodes"], (session["cpu_nodes"], place["cpu_ops"])


@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_every_node_on_cuda(placements, key) -> None:
    place = placements[key]
    assert place["session_providers"][0] == PROVIDERS[PROVIDER]
    assert place["cpu_nodes"] == 0, (
        f"{place['cpu_nodes']} nodes on the CPU ({place['cpu_shape_only']} integer shape arithmetic): "
        f"{place['cpu_ops']}; {place['cpu_node_detail'][:10]}"
    )


@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_memcpy_only_at_input_and_output(placements, key) -> None:
    place = placements[key]
    assert not place["memcpy_inside"], f"Memcpy inside the graph: {place['memcpy_inside']}"


def _images(channels: int) -> list[np.ndarray]:
    """Mixed sizes, some repeated (batched together), non-square, smaller than one patch, larger than native."""
    rng = np.random.default_rng(7)
    sizes = [(28, 28), (17, 45), (28, 28), (40, 24), (5, 7), (28, 28), (61, 33)]
    shape = (lambda h, w: (h, w)) if channels == 1 else (lambda h, w: (h, w, channels))
    return [rng.integers(0, 256, shape(h, w), dtype=np.uint8) for h, w in sizes]


@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_predictor_binds_io_on_cuda_and_matches_cpu(exports, key, monkeypatch) -> None:
    from vitexport.verify.parity import TOLERANCES

    calls = {"io_binding": 0, "run_with_iobinding": 0}
    for name in calls:
        original = getattr(ort.InferenceSession, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ort.InferenceSession, name, spy)
    gpu = Predictor(str(exports[key]), provider=PROVIDER, max_batch=2)
    assert gpu.providers[0] == PROVIDERS[PROVIDER]
    images = _images(gpu.channels)
    got = gpu.predict(images)
    want = Predictor(str(exports[key]), provider="cpu", max_batch=2).predict(images)
    atol, rtol = TOLERANCES[key[1]]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.size == w.size
        diff = np.abs(g.logits - w.logits)
        assert (diff <= atol + rtol * np.abs(w.logits)).all(), f"image {i} {g.size}: max |d| {diff.max():.2e}"
    groups = len({im.shape[:2] for im in images})
    # (28, 28) three times with max_batch 2: two runs for that size, one for every other size
    assert calls["run_with_iobinding"] >= groups + 1, calls
    assert calls["io_binding"] == calls["run_with_iobinding"], calls
