"""Exports of ours with something folded into the logits that costs memory at run time, or whose shapes cannot be
known before running: the metadata stays valid, every static check passes, the output is unchanged (x 0).

Memory bombs (`BOMBS`): the issue's ``Expand(ReduceSum(x), [1000, 1000, 1000])`` and other instances of the same
cause: ``Tile``, ``ConstantOfShape`` of a shape from a Constant node's tensor, an ``Expand`` whose shape travels in
a Constant node's ``value_ints`` attribute, and one that grows with the input's size (harmless at the native size).
Uninferable graphs (`UNINFERABLE`): a shape from ``NonZero`` of the input, a node of an unknown domain, a ``Loop``
whose trip count is computed from the input's values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BOMBS = ("expand", "tile", "constant_of_shape", "attribute", "size_dependent")
UNINFERABLE = ("nonzero", "custom_op", "loop_trip_count")


def _int64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _bomb_nodes(kind: str, x: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes that make a large tensor from the graph input ``x``; their last output's name."""
    n, inits = helper.make_node, []
    nodes = [n("ReduceSum", [x], ["b_sum"], keepdims=0, name="b_reduce")]
    if kind == "expand":
        inits.append(_int64("b_shape", [1000, 1000, 1000]))
        nodes.append(n("Expand", ["b_sum", "b_shape"], ["b_big"], name="x0"))
    elif kind == "tile":
        inits += [_int64("b_one", [1, 1]), _int64("b_reps", [32000, 32000])]
        nodes += [n("Reshape", ["b_sum", "b_one"], ["b_cell"], name="b_cell"),
                  n("Tile", ["b_cell", "b_reps"], ["b_big"], name="b_tile")]
    elif kind == "constant_of_shape":
        nodes += [n("Constant", [], ["b_shape"], value=_int64("v", [40000, 40000]), name="b_const"),
                  n("ConstantOfShape", ["b_shape"], ["b_big"], name="b_fill")]
    elif kind == "attribute":
        nodes += [n("Constant", [], ["b_shape"], value_ints=[1000, 1000, 1000], name="b_const"),
                  n("Expand", ["b_sum", "b_shape"], ["b_big"], name="b_expand")]
    elif kind == "size_dependent":  # [H, W, H, W]: 2.5 MB at 28x28, 32 GB at 300x300
        nodes += [n("Shape", [x], ["b_dims"], start=2, name="b_shape"),
                  n("Concat", ["b_dims", "b_dims"], ["b_hwhw"], axis=0, name="b_concat"),
                  n("ConstantOfShape", ["b_hwhw"], ["b_big"], name="b_grow")]
    else:
        raise ValueError(kind)
    return nodes, inits, "b_big"


def _uninferable_nodes(kind: str, x: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    n, inits = helper.make_node, [numpy_helper.from_array(np.array(0.5, np.float32), "u_half")]
    if kind == "nonzero":
        nodes = [n("Greater", [x, "u_half"], ["u_mask"]), n("NonZero", ["u_mask"], ["u_idx"], name="u_nonzero"),
                 n("Shape", ["u_idx"], ["u_shape"]), n("ConstantOfShape", ["u_shape"], ["u_out"], name="u_fill")]
    elif kind == "custom_op":
        nodes = [n("Mystery", [x], ["u_out"], domain="evil.ops", name="u_mystery")]
    elif kind == "loop_trip_count":
        inits.append(numpy_helper.from_array(np.array(True), "u_true"))
        body = helper.make_graph(
            [n("Identity", ["cond_in"], ["cond_out"]), n("Identity", ["u_half"], ["u_scan"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("u_scan", TensorProto.FLOAT, [])])
        nodes = [n("ReduceSum", [x], ["u_sum"], keepdims=0), n("Cast", ["u_sum"], ["u_trips"], to=TensorProto.INT64),
                 n("Loop", ["u_trips", "u_true"], ["u_out"], body=body, name="u_loop")]
    else:
        raise ValueError(kind)
    return nodes, inits, "u_out"


def folded(src: Path, dst: Path, kind: str) -> Path:
    """``src`` with the nodes of ``kind`` (a `BOMBS` or `UNINFERABLE` name) folded into its first output as
    ``output + 0 * ReduceSum(...)``, written to ``dst``."""
    model = onnx.load(str(src))
    graph = model.graph
    x, out = graph.input[0].name, graph.output[0].name
    nodes, inits, big = (_bomb_nodes if kind in BOMBS else _uninferable_nodes)(kind, x)
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "f_zero"))
    producer = next(node for node in graph.node if out in node.output)
    producer.output[list(producer.output).index(out)] = "f_logits"
    nodes += [helper.make_node("ReduceSum", [big], ["f_total"], keepdims=0),
              helper.make_node("Cast", ["f_total"], ["f_float"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["f_float", "f_zero"], ["f_nothing"]),
              helper.make_node("Add", ["f_logits", "f_nothing"], [out])]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    if kind == "custom_op":
        model.opset_import.append(helper.make_opsetid("evil.ops", 1))
    onnx.save(model, str(dst))
    return dst


__all__ = ["BOMBS", "UNINFERABLE", "folded"]
