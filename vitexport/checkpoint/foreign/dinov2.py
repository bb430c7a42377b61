"""DINOv2 as released by its own repository (facebookresearch/dinov2) -> timm's ``VisionTransformer``.

The layout is timm's except for ``mask_token`` (dropped: masking is training-only), the fused SwiGLU
``mlp.w12``/``mlp.w3`` (timm's ``swiglu_packed`` ``fc1``/``fc2``) and ``register_tokens``: with registers
the model becomes timm's ``no_embed_class`` form (the class token's positional row folded into it), as
timm's ``_convert_dinov2`` does (`dinov2_to_timm`).

What the repository fixes in code, not in the weights: LayerNorm eps 1e-6, GELU for ``mlp``, SiLU for the
SwiGLU FFN, and the head count of its four architectures (vit_small/base/large/giant2: embed_dim / 64);
another width has ``num_heads`` unknown. At the native size vitexport's forward (no head) equals the
repository's ``model(x)`` = ``forward_features(x)["x_norm_clstoken"]``; ``forward_features`` gives every
token after the final norm (``x_norm_clstoken`` then ``x_norm_patchtokens``, registers in between).

At other sizes the repository resamples the positional table with bicubic interpolation by scale
factor (``(grid + 0.1) / old_grid``, no antialias; newer versions make the offset and antialias
options); vitexport follows timm's dynamic-pad resampling (antialiased bicubic to the exact grid).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from vitexport.checkpoint.foreign.common import Converted, block_count, grid_args, need, patch_args, refuse, shape
from vitexport.checkpoint.infer import mlp_ratio_for

FORMAT = "dinov2"
REFERENCE = "dinov2 model(x) = forward_features(x)['x_norm_clstoken']"
# The repository's architectures: embed_dim -> num_heads (vit_small, vit_base, vit_large, vit_giant2).
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1536: 24}
_W12 = re.compile(r"blocks\.(\d+)\.mlp\.w12\.(?:weight|bias)")
_W3 = re.compile(r"blocks\.(\d+)\.mlp\.w3\.(?:weight|bias)")


def is_dinov2(keys: Iterable[str]) -> bool:
    """The DINOv2 repository's layout: timm's test (``mask_token``) on a model with a ``pos_embed`` table, without
    the rotary buffers or MIM head of an EVA-02 pretraining file (which has a mask token too)."""
    keys = set(keys)
    eva = any(k.endswith("rope.freqs_cos") or k.startswith("lm_head.") for k in keys)
    return "mask_token" in keys and "pos_embed" in keys and "patch_embed.proj.weight" in keys and not eva


def dinov2_to_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's key mapping for DINOv2 checkpoints.

    Ported from timm ``models/vision_transformer.py`` ``_convert_dinov2`` (Apache-2.0, Ross Wightman);
    unlike timm's, it leaves its argument unchanged (timm pops keys from the dict it is given).
    """
    state_dict = dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    state_dict.pop("mask_token", None)
    if "register_tokens" in state_dict:
        out["reg_token"] = state_dict.pop("register_tokens")
        out["cls_token"] = state_dict.pop("cls_token") + state_dict["pos_embed"][:, 0]
        out["pos_embed"] = state_dict.pop("pos_embed")[:, 1:]
    for k, v in state_dict.items():
        if _W12.match(k):
            out[k.replace("w12", "fc1")] = v
            continue
        elif _W3.match(k):
            out[k.replace("w3", "fc2")] = v
            continue
        out[k] = v
    return out


def _mlp_args(sd: dict[str, torch.Tensor], dim: int) -> dict[str, Any]:
    fused = shape(sd, "blocks.0.mlp.w12.weight")
    if fused is not None:  # SwiGLUFFNFused: silu(x1) * x2 from one packed projection
        return {"mlp_layer": "swiglu_packed", "act_layer": "silu", "mlp_ratio": mlp_ratio_for(dim, fused[0])}
    fc1 = shape(sd, "blocks.0.mlp.fc1.weight")
    if fc1 is None or len(fc1) != 2:
        raise refuse(FORMAT, "block 0 has neither mlp.fc1 nor mlp.w12 (an identity or unknown FFN)",
                     "only the repository's 'mlp' and 'swiglufused' FFNs are supported")
    return {"mlp_layer": "mlp", "act_layer": "gelu", "mlp_ratio": mlp_ratio_for(dim, fc1[0])}


def _bias_args(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """qkv bias, and one bias flag for the attention projection and the FFN (timm's ``proj_bias`` is both)."""
    ffn = "blocks.0.mlp.fc2.bias" in sd or "blocks.0.mlp.w3.bias" in sd
    proj = "blocks.0.attn.proj.bias" in sd
    if ffn != proj:
        raise refuse(FORMAT, f"proj_bias={proj} but ffn_bias={ffn}: timm has one flag for both",
                     "this model cannot be built exactly")
    return {"qkv_bias": "blocks.0.attn.qkv.bias" in sd, "proj_bias": proj}


def convert_dinov2(sd: dict[str, torch.Tensor]) -> Converted:
    """A DINOv2 repository state dict (with or without registers) in timm's layout, with what it states."""
    if any(re.match(r"blocks\.\d+\.\d+\.", k) for k in sd):
        raise refuse(FORMAT, "its blocks are chunked (blocks.<chunk>.<index>., block_chunks > 0), which timm's "
                     "conversion does not map", "re-save the backbone built with block_chunks=0 "
                     "(as the repository's torch.hub models are)")
    if any(k.startswith(("rope_embed.", "storage_tokens")) for k in sd):
        raise refuse(FORMAT, "it has rotary embeddings or storage tokens: a DINOv3 checkpoint",
                     "DINOv3's own files have no pos_embed: this mix cannot be mapped exactly")
    conv = tuple(need(sd, "patch_embed.proj.weight", FORMAT, rank=4).shape)
    args = patch_args(conv)
    dim = args["embed_dim"]
    reg = shape(sd, "register_tokens")
    pos = tuple(need(sd, "pos_embed", FORMAT, rank=3).shape)
    need(sd, "cls_token", FORMAT, rank=3)
    args.update(
        depth=block_count(sd, r"blocks\.(\d+)\.", FORMAT), num_classes=0, global_pool="token", class_token=True,
        reg_tokens=reg[1] if reg else 0, no_embed_class=bool(reg), init_values=1e-5 if "blocks.0.ls1.gamma" in sd
        else None, norm_eps=1e-6, final_norm=True, fc_norm=False, pre_norm=False,
        **_mlp_args(sd, dim), **_bias_args(sd),
    )
    unknown: list[str] = []
    grid_args(pos[1] - 1, conv[2:], args, unknown)
    if dim in HEADS_BY_WIDTH:
        args["num_heads"] = HEADS_BY_WIDTH[dim]
    else:
        unknown.append("num_heads")
    notes = [] if reg is None else [f"{reg[1]} registers: built as timm's no_embed_class form (as timm converts)"]
    return Converted(FORMAT, dinov2_to_timm(sd), args, "none", REFERENCE, tuple(unknown), notes=notes)


__all__ = ["FORMAT", "HEADS_BY_WIDTH", "convert_dinov2", "dinov2_to_timm", "is_dinov2"]
