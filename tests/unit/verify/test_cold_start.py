"""verify checks a cold start (issue 22, row 7): for an engine whose first inference after compiling decides later
results (OpenVINO 2026.4.1: a first request of one token made every later size wrong), verify also runs a fresh
compile whose first request is the sweep's smallest size, then its native and largest size.

The engine's own containment (a two-patch run right after compiling) is switched off to show that verify now sees
what OpenVINO does cold; with it, the fresh compile's cases pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.models import make_model, needs_openvino
from vitexport.verify.sweep import verify

# no class token, no registers: an image of at most one patch is a sequence of one token
ONE_TOKEN = {
    "avg": dict(img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=2, class_token=False,
                global_pool="avg"),
    "map": dict(img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=2, class_token=False,
                global_pool="map"),  # a SigLIP-style attention-pool head
}
SIZES = {
    "1x1 first": [(1, 1), (32, 32), (24, 40), (96, 96)],
    "under one patch first": [(5, 3), (32, 32), (17, 33)],
    "default sweep": None,  # its smallest size is 1x1, its first the native size
}


@pytest.fixture(scope="module", params=sorted(ONE_TOKEN))
def one_token_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vitexport.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("cold") / f"{request.param}.onnx"
    export_onnx(make_model(ONE_TOKEN[request.param], seed=1), path)
    return path


@pytest.mark.parametrize("sizes", list(SIZES.values()), ids=list(SIZES))
def test_verify_runs_a_fresh_compile_smallest_size_first(one_token_export: Path, sizes, monkeypatch) -> None:
    needs_openvino()
    from vitexport.engines.openvino import OpenVinoEngine

    batches = (1,) if sizes is None else (1, 2)
    report = verify(one_token_export, provider="openvino", sizes=sizes, batch_sizes=batches)
    fresh = [c for c in report.cases if c.fresh_compile]
    swept = [c for c in report.cases if not c.fresh_compile]
    smallest = min({(c.height, c.width) for c in swept}, key=lambda hw: hw[0] * hw[1])
    assert (fresh[0].height, fresh[0].width) == smallest and len(fresh) >= 2 and fresh[0].seq_len == 1
    assert report.passed, [c for c in report.cases if not c.passed]

    monkeypatch.setattr(OpenVinoEngine, "_prime", lambda self: None)  # OpenVINO as it is, cold
    cold = verify(one_token_export, provider="openvino", sizes=sizes, batch_sizes=batches)
    if sizes is None:  # the default sweep starts at the native size: alone it cannot see this
        assert all(c.passed for c in cold.cases if not c.fresh_compile)
    failed = [c for c in cold.cases if c.fresh_compile and not c.passed]
    assert not cold.passed and failed and all(c.seq_len > 1 for c in failed), cold.cases
