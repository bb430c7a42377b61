"""The ONNX export of every Eva / distilled DeiT / NaFlexViT family matches timm, and `verify` passes on ONNX Runtime,
OpenVINO and the ONNX reference evaluator.

Each representative (tests/helpers/families.py: a family's, or a class code path no family takes) is exported
by `export_onnx` (opset 18, dynamic batch, height and width, portable resampling; the exporter's own graph
checks run) and checked:
- the graph holds standard opset-18 ops that every runtime runs (`PORTABLE_OP_TYPES`: no contrib domain, no
  sequences, no Resize); a rotary model computes its sin/cos in the graph from the input's grid;
- ONNX Runtime matches timm's PyTorch model at a non-native size and one smaller than a patch, batch 3;
- `verify(provider="all")` rebuilds the model from the file's config and weights (the config round trip, any
  class) and passes on every engine, compared with each other too, at few sizes (a lean sweep: CI runs it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from tests.helpers.families import REPRESENTATIVES, TOL, pair, rel_err
from vitexport.export.onnx_export import export_onnx
from vitexport.onnx.graph import inspect_graph, non_portable_ops
from vitexport.verify.sweep import verify

VERIFY_SIZES = [(17, 45), (7, 5), (50, 31)]  # not multiples of the patch, smaller than one patch, larger than native


def check_portable_graph(path: Path, rotary: bool) -> None:
    proto = onnx.load(str(path))
    report = inspect_graph(proto)
    assert non_portable_ops(report) == [], non_portable_ops(report)  # standard ops every runtime runs, no Resize
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert [o.version for o in proto.opset_import if o.domain == ""] == [18]
    assert bool(report.rope) == rotary, report.rope  # sin/cos computed in the graph, only for rotary models
    assert all(r["angles_from_input_shape"] for r in report.rope), report.rope


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPRESENTATIVES))
@torch.no_grad()
def test_representative_onnx_matches_timm_and_verifies_on_every_engine(name: str, tmp_path: Path) -> None:
    ours, ref = pair(name, seed=3)
    path = tmp_path / f"{name}.onnx"
    result = export_onnx(ours, path)
    assert result.metadata["model_class"] == ours.config.CLASS
    check_portable_graph(path, rotary=ours.config.rotary)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(4)
    for h, w in [(17, 45), (7, 5)]:
        x = torch.randn(3, ours.config.in_chans, h, w, generator=gen)
        assert rel_err(sess.run(None, {"pixel_values": x.numpy()})[0], ref(x)) <= TOL, (name, h, w)
    report = verify(path, provider="all", sizes=[ours.config.img_hw, *VERIFY_SIZES], batch_sizes=(1, 3))
    engines = [s["name"] for s in report.sessions]
    assert {"cpu", "reference"} <= set(engines), report.skipped_providers
    assert "openvino" in engines or importlib.util.find_spec("openvino") is None, report.skipped_providers
    assert len(report.cases) == 2 * 4 * len(engines) and report.cross_provider
    assert report, (report.static_problems, [(c.provider, c.height, c.width, c.max_abs) for c in report.failures])


def test_openvino_is_installed_for_these_checks() -> None:
    """OpenVINO is part of the test extras: the comparisons above are not silently skipped."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'vitexport[openvino]')")
