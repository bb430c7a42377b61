"""verify checks a cold start (issue 22, row 7): for an engine whose first inference after compiling decides later
results (OpenVINO 2026.4.1: a first request of one token made every later size wrong), verify also runs a fresh
compile whose first request is the sweep's smallest size, then its native and largest size.

The engine's own containment (a two-patch run right after compiling) is switched off to show that verify now sees
what OpenVINO does cold; with it, the fresh compile's cases pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.models import needs_openvino
from tests.helpers.shared import no_prefix_model
from vitexport.verify.sweep import verify

# no class token, no registers: an image of at most one patch is a sequence of one token
POOLS = ["avg", "map"]  # no prefix token: average pooling, and a SigLIP-style attention-pool head
SIZES = {
    "1x1 first": [(1, 1), (32, 32), (24, 40), (96, 96)],
    "under one patch first": [(5, 3), (32, 32), (17, 33)],
    "default sweep": None,  # its smallest size is 1x1, its first the native size
}


@pytest.fixture(scope="module", params=POOLS)
def one_token_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:

    return no_prefix_model(tmp_path_factory, request.param)[0]


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
