"""The ONNX of every Eva / distilled DeiT / NaFlexViT representative matches timm on every runtime, at every size.

Each representative (tests/helpers/families.py) is exported with ``torch.onnx.export(dynamo=True)`` at
opset 18 with dynamic batch, height and width, from a non-native, non-square example, in the portable
resampling form, and checked:
- the graph holds standard opset-18 ops only (no contrib domain, no sequences, no Resize), and the rotary
  models compute their sin/cos in the graph (Sin, Cos, fed by a Range over the input's grid);
- ONNX Runtime (CPU), OpenVINO (CPU, f32; its first inference at the native size) and the ONNX reference
  evaluator each match timm's PyTorch model at sizes that exercise each rule, batch 1 and 3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from tests.helpers.families import REPRESENTATIVES, SIZES, TOL, export_dynamic, openvino_runner, pair, rel_err

REFERENCE_SIZES = [(24, 40), (17, 45), (1, 1), (41, 57)]  # the reference evaluator is slow (numpy)


def graph_ops(path: Path) -> list[tuple[str, str]]:
    return [(node.domain, node.op_type) for node in onnx.load(str(path)).graph.node]


def check_portable_graph(path: Path, rotary: bool) -> None:
    ops = graph_ops(path)
    assert {d for d, _ in ops} == {""}, ops  # no contrib (com.microsoft) or custom domain
    for _, op in ops:  # every op a standard one of opset 18; no sequences; no Resize (portable resampling)
        assert onnx.defs.get_schema(op, 18, "").since_version <= 18 and "Sequence" not in op, op
        assert op != "Resize", "the portable form resamples with MatMul"
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain == ""] == [18]
    names = {op for _, op in ops}
    assert ({"Sin", "Cos", "Range"} <= names) == rotary, names  # sin/cos from the grid, not a stored table


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPRESENTATIVES))
@torch.no_grad()
def test_representative_onnx_matches_timm_on_every_runtime(name: str, tmp_path: Path) -> None:
    ours, ref = pair(name, seed=3)
    path = export_dynamic(ours, tmp_path / f"{name}.onnx", example=(57, 83))
    check_portable_graph(path, rotary=getattr(ours.config, "use_rot_pos_emb", False))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    openvino = openvino_runner(path)
    gen = torch.Generator().manual_seed(4)
    cases = [(b, h, w) for h, w in SIZES for b in (3, 1)]  # the native size first (OpenVINO's first inference)
    for b, h, w in cases:
        x = torch.randn(b, ours.config.in_chans, h, w, generator=gen)
        expected = ref(x)
        got = sess.run(None, {"pixel_values": x.numpy()})[0]
        assert rel_err(got, expected) <= TOL, ("onnxruntime", name, b, h, w)
        if openvino is not None:
            assert rel_err(openvino(x.numpy()), expected) <= TOL, ("openvino", name, b, h, w)
    reference = ReferenceEvaluator(str(path))
    for h, w in REFERENCE_SIZES:
        x = torch.randn(2, ours.config.in_chans, h, w, generator=gen)
        got = reference.run(None, {"pixel_values": x.numpy()})[0]
        assert rel_err(np.asarray(got), ref(x)) <= TOL, ("reference", name, h, w)


def test_openvino_is_installed_for_these_checks() -> None:
    """OpenVINO is part of the test extras: the comparisons above are not silently skipped."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'vitexport[openvino]')")
