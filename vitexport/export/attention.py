"""How attention is written into the ONNX graph.

- ``chunked`` (default): standard ops at opset 18, computed one block of queries at a time in a
  ``Loop``, so the scores of one block, never the whole ``tokens x tokens`` matrix, exist at once:
  memory grows linearly with the tokens on every runtime (ONNX Runtime, OpenVINO, the reference
  evaluator). A block holds ``CHUNK_SCORES // (batch * heads * key tokens)`` queries (at least one,
  spread evenly over the blocks; `vitexport.security.limits.CHUNK_SCORES`, 2^24: 64 MB of scores),
  so below ~2^24 / heads score elements per image the loop runs once. OpenVINO's engine runs each
  such loop as its own fused attention op instead (`vitexport.engines.openvino`), which it does not
  do inside a loop.
- ``sdpa``: torch's decomposition into standard ops (MatMul, Softmax, ...), opset 18; runs everywhere,
  but ONNX Runtime and the reference evaluator then hold every ``batch x heads x tokens^2`` score
  matrix (twice): 6.4 GB for ViT-S/16 at 16k tokens (docs/numerics.md).
- ``mha``: ONNX Runtime's fused ``com.microsoft.MultiHeadAttention`` contrib op, still opset 18, so
  the Resize stays Resize-18 (on CUDA in every onnxruntime-gpu since 1.18). ONNX Runtime only.
- ``onnx``: the standard ``Attention`` op, which needs opset >= 23 (its Resize is then Resize-19,
  which older onnxruntime-gpu builds run on the CPU).
"""

from __future__ import annotations

import itertools
from typing import Any

from vitexport.export.defaults import DEFAULT_ATTENTION  # noqa: F401 - re-exported
from vitexport.security.limits import CHUNK_SCORES

ATTENTION_CHOICES = ("chunked", "sdpa", "mha", "onnx")
ATTENTION_MIN_OPSET = {"chunked": 18, "sdpa": 18, "mha": 18, "onnx": 23}
CONTRIB_DOMAIN = "com.microsoft"


def _register_mha_schema() -> None:
    """Let onnx (and so onnxscript and the checker) know the contrib op's signature."""
    import onnx
    from onnx.defs import OpSchema

    try:
        onnx.defs.get_schema("MultiHeadAttention", 1, CONTRIB_DOMAIN)
        return
    except onnx.defs.SchemaError:
        pass
    schema = OpSchema(
        "MultiHeadAttention",
        CONTRIB_DOMAIN,
        1,
        doc="ONNX Runtime contrib op: multi-head attention over (batch, sequence, hidden) query/key/value.",
        inputs=[
            OpSchema.FormalParameter("query", "T"),
            OpSchema.FormalParameter("key", "T"),
            OpSchema.FormalParameter("value", "T"),
        ],
        outputs=[OpSchema.FormalParameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float tensors")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of attention heads")],
    )
    onnx.defs.register_schema(schema)


def translation_table(attention: str, chunk_scores: int | None = None) -> dict[Any, Any] | None:
    """The ``custom_translation_table`` for torch.onnx.export, or None for the default decomposition.

    ``chunk_scores`` (``chunked`` only): score elements per block of queries, default
    `vitexport.security.limits.CHUNK_SCORES` (which the memory estimate models).
    """
    if attention in ("sdpa", "onnx"):
        return None
    if attention == "chunked":
        import torch

        return {torch.ops.aten.scaled_dot_product_attention.default: _chunked_sdpa(chunk_scores or CHUNK_SCORES)}
    if attention != "mha":
        raise ValueError(f"unknown attention {attention!r}")
    import onnxscript
    import torch
    from onnxscript import opset18 as op

    _register_mha_schema()
    msft = onnxscript.values.Opset(CONTRIB_DOMAIN, 1)

    def sdpa_as_mha(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        # (B, h, N, d) -> (B, N, h*d) for MultiHeadAttention (default scale 1/sqrt(d), as SDPA) -> (B, h, N, d)
        if attn_mask is not None or is_causal or scale is not None or dropout_p:
            raise NotImplementedError("attention='mha' exports plain self-attention only (no mask, causal or scale)")
        # value's head size may differ from query's (differential attention: 2x); query and key/value
        # lengths may differ (the MAP head's one latent query)
        num_heads, head_dim, v_head_dim = query.shape[1], query.shape[3], value.shape[3]

        def to_bsd(t, d):
            return op.Reshape(op.Transpose(t, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, num_heads * d]))

        out = msft.MultiHeadAttention(
            to_bsd(query, head_dim), to_bsd(key, head_dim), to_bsd(value, v_head_dim), num_heads=num_heads
        )
        return op.Transpose(op.Reshape(out, op.Constant(value_ints=[0, 0, num_heads, v_head_dim])), perm=[0, 2, 1, 3])

    return {torch.ops.aten.scaled_dot_product_attention.default: sdpa_as_mha}


def _loop_op() -> Any:
    """``Loop`` with a trip count, a condition, no loop-carried values and one scan output: torch's graph
    builder cannot bind Loop's variadic signature, so the op is called through this fixed one."""
    import onnxscript
    from onnx.defs import OpSchema
    from onnxscript import opset18

    schema = OpSchema(
        "Loop", "", 16, doc="Loop with one scan output",
        inputs=[OpSchema.FormalParameter("M", "tensor(int64)"), OpSchema.FormalParameter("cond", "tensor(bool)")],
        outputs=[OpSchema.FormalParameter("scan", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float tensors")],
        attributes=[OpSchema.Attribute("body", OpSchema.AttrType.GRAPH, "the loop body")],
    )
    return onnxscript.values.Op(opset18, "Loop", op_schema=schema)


def _block_body(prefix: str, blocks: Any, keys_t: Any, value: Any) -> Any:
    """The loop body: block ``i`` of the queries ``(B, h, C, d)`` -> softmax(q k^T) v, flattened (``(B*h*C*dv,)``).

    Flattened because runtimes disagree on how a Loop joins its scan outputs: ONNX Runtime and OpenVINO
    stack them along a new axis, the reference evaluator concatenates them (numpy.vstack); for 1-D
    outputs both give ``(blocks, B*h*C*dv)``.
    """
    import onnx_ir as ir

    i = ir.Value(name=f"{prefix}i", type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([]))
    cond = ir.Value(name=f"{prefix}cond", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([]))
    flat = ir.node("Constant", [], attributes={"value_ints": [-1]})
    q = ir.node("Gather", [blocks, i], attributes={"axis": 2})
    scores = ir.node("MatMul", [q.outputs[0], keys_t])
    probs = ir.node("Softmax", [scores.outputs[0]], attributes={"axis": -1})
    out = ir.node("MatMul", [probs.outputs[0], value])
    out_flat = ir.node("Reshape", [out.outputs[0], flat.outputs[0]])
    keep = ir.node("Identity", [cond])
    nodes = [flat, q, scores, probs, out, out_flat, keep]
    for name, node in zip(("flat", "q", "scores", "probs", "out", "out_flat", "cond_out"), nodes, strict=True):
        node.outputs[0].name = prefix + name
    return ir.Graph([i, cond], [keep.outputs[0], out_flat.outputs[0]], nodes=nodes, name=f"{prefix}body")


def _chunked_sdpa(chunk_scores: int) -> Any:
    """The translation of ``scaled_dot_product_attention`` as a Loop over blocks of queries (module doc)."""
    import onnx_ir as ir
    from onnxscript import opset18 as op

    loop, counter = _loop_op(), itertools.count()

    def sdpa_chunked(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
        if attn_mask is not None or is_causal or dropout_p or enable_gqa:
            raise NotImplementedError("attention='chunked' exports plain self-attention only (no mask, causal, "
                                      "dropout or grouped heads); use attention='sdpa'")
        heads, head_dim, v_dim = query.shape[1], query.shape[3], value.shape[3]
        prefix = f"chunked_attention_{next(counter)}_"

        def ints(*values):
            return op.Constant(value_ints=list(values))

        q = op.Mul(query, op.CastLike(op.Constant(value_float=scale or head_dim**-0.5), query))
        batch, n_q, n_k = op.Shape(q, start=0, end=1), op.Shape(q, start=2, end=3), op.Shape(key, start=2, end=3)
        one = ints(1)
        # queries per block: the budget over (batch x heads x key tokens), within [1, n_q]; then as many blocks
        # as that needs, and the queries spread evenly over them (padding < one row per block)
        rows = op.Min(op.Max(op.Div(ints(chunk_scores), op.Mul(op.Mul(batch, ints(heads)), n_k)), one), n_q)
        n_blocks = op.Div(op.Sub(op.Add(n_q, rows), one), rows)
        rows = op.Div(op.Sub(op.Add(n_q, n_blocks), one), n_blocks)
        pad = op.Sub(op.Mul(n_blocks, rows), n_q)
        zeros = op.Expand(op.CastLike(op.Constant(value_float=0.0), q), op.Concat(batch, ints(heads), pad,
                                                                                   ints(head_dim), axis=0))
        blocks = op.Reshape(op.Concat(q, zeros, axis=2),
                            op.Concat(batch, ints(heads), n_blocks, rows, ints(head_dim), axis=0))
        keys_t = op.Transpose(key, perm=[0, 1, 3, 2])
        body = _block_body(prefix, blocks, keys_t, value)
        out = loop(op.Squeeze(n_blocks, ints(0)), op.Constant(value=ir.tensor(True)), body=body)
        out = op.Reshape(out, op.Concat(n_blocks, batch, ints(heads), rows, ints(v_dim), axis=0))
        out = op.Reshape(op.Transpose(out, perm=[1, 2, 0, 3, 4]), op.Concat(batch, ints(heads, -1, v_dim), axis=0))
        return op.Slice(out, ints(0), n_q, ints(2))  # (B, h, n_q, dv)

    return sdpa_chunked
