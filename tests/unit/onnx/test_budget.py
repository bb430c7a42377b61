"""The run-time memory check of any graph (vitexport.onnx.budget): bombs folded into a real export are refused before
they run, naming the node; graphs whose shapes cannot be known are refused; results are cached per input shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.onnx_bombs import BOMBS, UNINFERABLE, folded
from vitexport._util.errors import CheckpointError, LimitError
from vitexport.onnx import budget as budget_module
from vitexport.onnx.budget import GraphBudget

NATIVE = (1, 1, 28, 28)  # the digits sample
NODES = {"expand": "'x0' (Expand)", "tile": "'b_tile' (Tile)", "constant_of_shape": "'b_fill' (ConstantOfShape)",
         "attribute": "'b_expand' (Expand)", "size_dependent": "'b_grow' (ConstantOfShape)",
         "nonzero": "'u_nonzero' (NonZero)", "custom_op": "'u_mystery' (evil.ops.Mystery)",
         "loop_trip_count": "'u_loop' (Loop)"}


@pytest.mark.parametrize("kind", [k for k in BOMBS if k != "size_dependent"])
def test_memory_bombs_are_refused_at_the_native_size(sample_onnx: Path, tmp_path: Path, kind: str) -> None:
    """The issue's Expand(ReduceSum(x), [1000, 1000, 1000]) and other instances (Tile, ConstantOfShape of a Constant
    node's tensor, an Expand shape in a Constant's value_ints attribute): the node is named, with the limit."""
    budget = GraphBudget.from_path(folded(sample_onnx, tmp_path / "b.onnx", kind), 4.0)
    with pytest.raises(LimitError, match=r"at an input of 1x1x28x28: the graph holds [\d.]+ GB of tensors at once at "
                                         rf"node {NODES[kind].replace('(', '[(]').replace(')', '[)]')}.*over the limit "
                                         r"of 4 GB \(--max-memory-gb\)"):
        budget.check(NATIVE)


def test_a_bomb_that_grows_with_the_input_is_refused_at_its_size(sample_onnx: Path, tmp_path: Path) -> None:
    """[H, W, H, W] floats: 2.5 MB at 28x28 (runs), 32 GB at 300x300 (refused, naming the node)."""
    budget = GraphBudget.from_path(folded(sample_onnx, tmp_path / "b.onnx", "size_dependent"), 4.0)
    assert budget.check(NATIVE).peak_bytes < 10e6
    with pytest.raises(LimitError, match=r"1x1x300x300: the graph holds 32\.\d GB .* node 'b_grow'"):
        budget.check((1, 1, 300, 300))


@pytest.mark.parametrize("kind", UNINFERABLE)
def test_graphs_whose_shapes_cannot_be_inferred_are_refused(sample_onnx: Path, tmp_path: Path, kind: str) -> None:
    """NonZero of the input, an op of an unknown domain, a Loop counted by the input's values: refused whatever the
    limit (None: no limit), naming the node and the re-export."""
    budget = GraphBudget.from_path(folded(sample_onnx, tmp_path / "u.onnx", kind), None)
    with pytest.raises(CheckpointError, match=rf"refused to run .* its node {NODES[kind][:8]}.*vitexport onnx"):
        budget.check(NATIVE)


def test_our_export_passes_and_results_are_cached(sample_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One inference per distinct input shape; refusals are cached too."""
    calls = []
    real = budget_module.infer
    monkeypatch.setattr(budget_module, "infer", lambda model, shape: calls.append(shape) or real(model, shape))
    budget = GraphBudget.from_path(sample_onnx, 0.001)  # 1 MB
    for _ in range(3):
        assert budget.check(NATIVE).peak_bytes < 1e6
        with pytest.raises(LimitError):
            budget.check((8, 1, 300, 300))
    assert calls == [NATIVE, (8, 1, 300, 300)]
    assert budget.native_shape({"config": {"img_size": 28, "in_chans": 1}}) == NATIVE


def test_nodes_out_of_file_order_are_inferred_in_dependency_order(sample_onnx: Path, tmp_path: Path) -> None:
    """ONNX Runtime's int8 quantizer writes the chunked attention's Loop before the node making a value its body reads
    (ONNX Runtime runs it; the walk in file order refused it): the same graph with its nodes reversed, and the
    quantized sample, are inferred at several sizes and run on ONNX Runtime; a value no node makes is still refused."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from vitexport.export.optimize import quantize_onnx

    proto = onnx.load(str(sample_onnx))
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(nodes))
    reversed_path = tmp_path / "reversed.onnx"
    onnx.save(proto, str(reversed_path))
    int8_path = tmp_path / "int8.onnx"
    quantize_onnx(sample_onnx, int8_path)
    for path in (reversed_path, int8_path):
        for shape in [(2, 1, 28, 28), (3, 1, 20, 45), (1, 1, 5, 3)]:
            assert GraphBudget.from_path(path, None).check(shape).peak_bytes > 0
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.run(None, {"pixel_values": np.zeros((3, 1, 20, 45), np.float32)})[0].shape == (3, 10)
    proto.graph.node.remove(next(n for n in proto.graph.node if n.op_type == "Reshape"))  # its value: made by none
    onnx.save(proto, str(reversed_path))
    with pytest.raises(CheckpointError, match="before any node makes it"):
        GraphBudget.from_path(reversed_path, None).check(NATIVE)
