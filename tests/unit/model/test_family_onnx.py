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
    swept = [c for c in report.cases if not c.fresh_compile]  # OpenVINO adds its fresh-compile cold start
    assert len(swept) == 2 * 4 * len(engines) and report.cross_provider
    assert len(report.cases) - len(swept) == (3 if "openvino" in engines else 0)
    assert report, (report.static_problems, [(c.provider, c.height, c.width, c.max_abs) for c in report.failures])


def test_openvino_is_installed_for_these_checks() -> None:
    """OpenVINO is part of the test extras: the comparisons above are not silently skipped."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'vitexport[openvino]')")


@pytest.mark.slow
@torch.no_grad()
def test_graph_checks_catch_fixed_rotary_tables_and_wrong_table_grids(tmp_path: Path) -> None:
    """A rotary table traced for one grid (a static export read as dynamic), a graph without Sin/Cos, and a
    factorized table whose length is no side of the metadata's native grid are each reported."""
    from vitexport.onnx.graph import check_graph, load_onnx
    from vitexport.onnx.spec import io_spec

    ours, _ = pair("rope-axial")
    static = tmp_path / "static.onnx"
    export_onnx(ours, static, static_size=(24, 40))  # passes: a static export's angles may be constants
    report = inspect_graph(load_onnx(static))
    spec = io_spec("logits", ours.config.global_pool)
    problems = check_graph(report, spec, dynamic_size=True, expect_resize=False, expect_rope=True)
    assert any("has fixed angles: the rotary table does not follow" in p for p in problems), problems
    report.rope = []
    problems = check_graph(report, spec, dynamic_size=False, expect_resize=False, expect_rope=True)
    assert any(p.startswith("no Sin/Cos: the rotary embeddings are missing") for p in problems), problems

    factorized, _ = pair("naflex-factorized")
    path = tmp_path / "factorized.onnx"
    export_onnx(factorized, path)  # passes: the row and column tables' lengths are the native grid's sides
    report = inspect_graph(load_onnx(path))
    assert sorted(len(m["constant_shape"]) for m in report.resample_matmuls if m["constant_shape"]) == [3, 3]
    report.metadata["native_grid"] = [3, 4]  # the table is 3x5
    problems = check_graph(report, io_spec("logits", "avg"), expect_rope=False)
    assert problems == ["the graph resamples a table of length 5, but the metadata's native grid is 3x4"], problems
