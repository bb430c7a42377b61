"""How attention is written into the ONNX graph.

- ``sdpa``: torch's decomposition into standard ops (MatMul, Softmax, ...), opset 18; runs everywhere.
- ``mha``: ONNX Runtime's fused ``com.microsoft.MultiHeadAttention`` contrib op, still opset 18, so
  the Resize stays Resize-18 (on CUDA in every onnxruntime-gpu since 1.18). ONNX Runtime only.
- ``onnx``: the standard ``Attention`` op, which needs opset >= 23 (its Resize is then Resize-19,
  which older onnxruntime-gpu builds run on the CPU).
"""

from __future__ import annotations

from typing import Any

ATTENTION_CHOICES = ("sdpa", "mha", "onnx")
ATTENTION_MIN_OPSET = {"sdpa": 18, "mha": 18, "onnx": 23}
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


def translation_table(attention: str) -> dict[Any, Any] | None:
    """The ``custom_translation_table`` for torch.onnx.export, or None for the default decomposition."""
    if attention in ("sdpa", "onnx"):
        return None
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
