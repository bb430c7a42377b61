"""Shape inference with data propagation (vitexport.onnx.shapes) against the ONNX reference evaluator and ONNX
Runtime: every intermediate of our exports, every export form, single ops at their edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.helpers.models import CONFIGS, make_model, sweep_sizes
from vitexport.model.config import ViTConfig
from vitexport.onnx.shapes import Ctx, Uninferable, infer, info_of, walk
from vitexport.security import onnxwire
from vitexport.security.limits import estimate


def _inferred(path: Path, shape: tuple[int, ...]) -> dict[str, object]:
    model = onnxwire.read_model(path)
    env = {model.graph.input[0].name: info_of(shape, model.graph.input[0].elem_type)}
    walk(model.graph, env, Ctx(model.opset))
    return env


def _sizes(args: dict) -> list[tuple[int, int]]:
    sizes = sweep_sizes(args)
    return [sizes[0], sizes[1], sizes[4], sizes[7]]  # native, 1x1, not divisible, 3x native


def test_every_intermediate_matches_the_reference_evaluator(exported) -> None:
    """Each config's default export at four sizes (native, 1x1, not divisible, 3x native), batch 2: the shape of
    every intermediate the evaluator computes is the inferred one, and so is every value inferred."""
    for name, (_, path, _) in exported.items():
        evaluator = ReferenceEvaluator(onnx.load(str(path)))
        channels = CONFIGS[name].get("in_chans", 3)
        for h, w in _sizes(CONFIGS[name]):
            x = np.random.default_rng(h * w).random((2, channels, h, w), np.float32)
            seen = evaluator.run(None, {"pixel_values": x}, intermediate=True)
            env = _inferred(path, x.shape)
            assert len(seen) > 100
            for key, result in seen.items():
                if not key:  # an omitted optional output
                    continue
                assert tuple(np.shape(result)) == env[key].shape, (name, (h, w), key)
                if env[key].value is not None:
                    np.testing.assert_array_equal(np.asarray(result), env[key].value, err_msg=f"{name} {key}")


CONSTANT_SLACK = 1 << 20  # tensors our graphs compute from weights (transposed grids, resampling matrices)


def test_footprint_stays_within_the_memory_estimate(exported) -> None:
    """The graph's own footprint never exceeds `limits.estimate` for our exports, but for what the graph computes
    from its weights (under 1 MB for these models; the estimate leaves it out): the graph check cannot refuse a
    size and batch the estimator allows at any real limit (every sweep size, batches 1 and 3)."""
    for name, (_, path, _) in exported.items():
        model = onnxwire.read_model(path)
        cfg = ViTConfig(**CONFIGS[name])
        for h, w in sweep_sizes(CONFIGS[name]):
            for batch in (1, 3):
                found, _ = infer(model, (batch, cfg.in_chans, h, w))
                assert 0 < found.peak_bytes <= estimate(cfg, h, w, batch).bytes + CONSTANT_SLACK, (name, h, w, batch)


def _ort_output_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape).astype(np.float16 if "16" in session.get_inputs()[0].type
                                                       else np.float32)
    return session.run(None, {session.get_inputs()[0].name: x})[0].shape


@pytest.fixture(scope="module")
def mha_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contrib-MultiHeadAttention export the mha, optimized and int8 forms share (one export, not three)."""
    from vitexport.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("mha") / "m.onnx"
    export_onnx(make_model(CONFIGS["reg_noembed"], seed=3), path, attention="mha")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("form", ["mha", "onnx", "resize", "float16", "static", "optimized", "int8"])
def test_every_export_form_is_inferable(tmp_path: Path, mha_export: Path, form: str) -> None:
    """Attention forms (contrib MultiHeadAttention, opset-23 Attention), resampling forms, fp16, a fixed size and
    batch, ORT's offline optimization (FusedMatMul, SkipLayerNormalization) and dynamic int8 (MatMulInteger,
    DynamicQuantizeLinear): the output's shape is ONNX Runtime's and the footprint is within the estimate."""
    from vitexport.export.onnx_export import export_onnx
    from vitexport.export.optimize import optimize_onnx, quantize_onnx

    args = CONFIGS["reg_noembed"]
    options = {"onnx": dict(attention="onnx", opset=23),
               "resize": dict(resample="resize"),
               "float16": dict(dtype="float16"), "static": dict(static_size=(24, 40), batch_size=2)}
    path = mha_export
    if form in options:
        path = tmp_path / "m.onnx"
        export_onnx(make_model(args, seed=3), path, **options[form])
    elif form == "optimized":
        path = optimize_onnx(mha_export, tmp_path / "o.onnx").path
    elif form == "int8":
        path = quantize_onnx(mha_export, tmp_path / "q.onnx").path
    cfg = ViTConfig(**args)
    sizes = [(24, 40)] if form == "static" else _sizes(args)
    for h, w in sizes:
        shape = (2, cfg.in_chans, h, w)
        found, outputs = infer(onnxwire.read_model(path), shape)
        assert outputs[0].shape == _ort_output_shape(path, shape), (form, h, w)
        assert found.peak_bytes <= estimate(cfg, h, w, 2).bytes + CONSTANT_SLACK, (form, h, w)


def _single(op: str, inputs: list[tuple[str, np.ndarray]], constants: dict[str, np.ndarray], outputs: int = 1,
            **attrs) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, [n for n, _ in inputs] + list(constants), [f"y{i}" for i in range(outputs)], **attrs)],
        "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(v.shape)) for n, v in inputs],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.UNDEFINED, None) for i in range(outputs)],
        [numpy_helper.from_array(v, n) for n, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


_X = np.zeros((2, 3, 7, 5), np.float32)
SINGLE_OPS = [
    ("Slice", {"s": np.array([6, -1]), "e": np.array([-100, -9]), "a": np.array([2, 3]), "st": np.array([-2, -1])}, {}),
    ("Reshape", {"shape": np.array([0, -1, 5])}, {}),
    ("Pad", {"pads": np.array([0, 0, 2, 1, 0, 0, 3, 0])}, {}),
    ("Expand", {"shape": np.array([4, 1, 1, 1, 1])}, {}),
    ("Tile", {"reps": np.array([1, 2, 1, 3])}, {}),
    ("Squeeze", {}, {}),
    ("Unsqueeze", {"axes": np.array([-1, 0])}, {}),
    ("ReduceMean", {"axes": np.array([1, -1])}, {"keepdims": 0}),
    ("Transpose", {}, {"perm": [3, 1, 0, 2]}),
    ("Flatten", {}, {"axis": -2}),
    ("AveragePool", {}, {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", {}, {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [3, 2]}),
    ("Conv", {"w": np.zeros((4, 3, 3, 2), np.float32)}, {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]}),
    ("Resize", {"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 1.5, 0.4], np.float32)}, {}),
    ("Split", {}, {"axis": 2, "num_outputs": 3}),
    ("Gather", {"i": np.array([[0, -1], [2, 1]])}, {"axis": 3}),
    ("TopK", {"k": np.array([2])}, {"axis": 2}),
    ("Einsum", {}, {"equation": "bchw->bwhc"}),
]


@pytest.mark.parametrize("op, constants, attrs", SINGLE_OPS, ids=[c[0] for c in SINGLE_OPS])
def test_single_ops_at_their_edges(tmp_path: Path, op: str, constants: dict, attrs: dict) -> None:
    """Negative steps and clamped ends, 0 and -1 in a shape, uneven pads, bidirectional Expand, ceil_mode, SAME
    padding, dilations, fractional scales, uneven splits, negative indices: the reference evaluator's shapes."""
    outputs = 3 if op == "Split" else 2 if op == "TopK" else 1
    model = _single(op, [("x", _X)], {k: (v.astype(np.int64) if v.dtype.kind == "i" else v)
                                      for k, v in constants.items()}, outputs, **attrs)
    path = tmp_path / "op.onnx"
    onnx.save(model, str(path))
    seen = ReferenceEvaluator(model).run(None, {"x": _X})
    env = _inferred(path, _X.shape)
    assert [env[f"y{i}"].shape for i in range(outputs)] == [np.shape(s) for s in seen]


def test_a_loop_counts_its_body_and_its_stacked_outputs(tmp_path: Path) -> None:
    """A Loop whose trip count is shape arithmetic (as the chunked attention's): its scan output is trip count x the
    body's output, and the body's peak counts while it runs; outer-scope values stay alive for the body."""
    body = helper.make_graph(
        [helper.make_node("Gather", ["blocks", "i"], ["block"], axis=0),
         helper.make_node("MatMul", ["block", "keys_t"], ["scores"]),
         helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
         helper.make_node("Identity", ["c"], ["c_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=0, end=1),
             helper.make_node("Div", ["s", "four"], ["trips1"]),
             helper.make_node("Squeeze", ["trips1"], ["trips"]),
             helper.make_node("Reshape", ["x", "block_shape"], ["blocks"]),
             helper.make_node("Transpose", ["x"], ["keys_t"]),
             helper.make_node("Loop", ["trips", "yes"], ["out"], body=body)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([4], np.int64), "four"),
                               numpy_helper.from_array(np.array([-1, 4, 8], np.int64), "block_shape"),
                               numpy_helper.from_array(np.array(True), "yes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "loop.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(0).random((40, 8), np.float32)
    (seen,) = ReferenceEvaluator(model).run(None, {"x": x})
    found, (out,) = infer(onnxwire.read_model(path), x.shape)
    assert out.shape == (10, 4, 40) and seen.size == out.size
    scores = 4 * 40 * 4
    assert found.peak_bytes >= x.nbytes + out.nbytes + 2 * scores  # the body's scores and softmax at once


def test_unknown_values_and_ops_are_uninferable(tmp_path: Path) -> None:
    """A Reshape of a shape computed from the input's values, and an op of another domain: `Uninferable` naming the
    node, not a guess."""
    nodes = [helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["x", "xi"], ["y"], name="by_values")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "values.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(Uninferable, match="node 'by_values' \\(Reshape\\) has an output shape that depends on the"):
        infer(onnxwire.read_model(path), (2,))
