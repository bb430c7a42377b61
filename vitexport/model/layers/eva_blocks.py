"""The blocks of timm's ``Eva``, with timm's state_dict keys.

- `EvaBlock` (pre-norm): ``x + gamma_1 * attn(norm1(x), rope)``, ``x + gamma_2 * mlp(norm2(x))``; the layer
  scales are the parameters ``gamma_1``/``gamma_2`` (``init_values``), ``gamma_2`` absent with
  ``attn_only_layer_scale`` (Sapiens2);
- `EvaBlockPostNorm` (``use_post_norm``, EVA-02 enormous): ``x + norm1(attn(x, rope))``, ``x + norm2(mlp(x))``.

The MLP (`eva_mlp`), as timm chooses it: GELU ``Mlp``; with ``swiglu_mlp`` a packed ``GluMlp`` (one ``fc1``
of twice the width, SiLU on the first half) unless a norm inside the MLP (``scale_mlp``) or a width
alignment (``swiglu_align_to``, pre-norm blocks only) asks for ``SwiGLU`` (``fc1_g``, ``fc1_x``).
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from typing import Optional

import torch
from torch import nn

from vitexport.model.family_config import EvaConfig
from vitexport.model.layers.mlp import GluMlp, Mlp, SwiGLU
from vitexport.model.layers.norm import norm_factory
from vitexport.model.layers.rope_attention import AttentionRope, EvaAttention


def eva_mlp(c: EvaConfig, post_norm: bool) -> nn.Module:
    """timm ``EvaBlock`` / ``EvaBlockPostNorm``'s MLP for config ``c``."""
    dim, hidden = c.embed_dim, int(c.embed_dim * c.mlp_ratio)
    norm = norm_factory(c.norm_layer, c.norm_eps) if c.scale_mlp else None
    if c.swiglu_mlp:
        if c.scale_mlp or (c.swiglu_align_to and not post_norm):
            if c.swiglu_align_to:
                hidden += -hidden % c.swiglu_align_to
            return SwiGLU(dim, hidden, "silu", True, norm)
        return GluMlp(dim, hidden * 2, "silu", True, None, gate_last=False)
    return Mlp(dim, hidden, "gelu", True, norm)


def eva_attention(c: EvaConfig, kv_heads: Optional[int], qk_norm: bool) -> nn.Module:
    norm = norm_factory(c.norm_layer, c.norm_eps)
    args = (c.embed_dim, c.num_heads, norm, c.qkv_bias, c.qkv_fused, c.num_prefix_tokens, qk_norm,
            c.scale_attn_inner, c.rope_rotate_half)
    if c.attn_type == "rope":
        return AttentionRope(*args, num_kv_heads=kv_heads)
    return EvaAttention(*args)


class EvaBlock(nn.Module):
    """Pre-norm block with optional layer scales ``gamma_1`` (attention) and ``gamma_2`` (MLP)."""

    def __init__(self, c: EvaConfig, kv_heads: Optional[int] = None) -> None:
        super().__init__()
        dim, norm = c.embed_dim, norm_factory(c.norm_layer, c.norm_eps)
        self.norm1 = norm(dim)
        self.attn = eva_attention(c, kv_heads, c.qk_norm)
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(c.init_values))) if c.init_values is not None else None
        self.norm2 = norm(dim)
        self.mlp = eva_mlp(c, post_norm=False)
        use_mlp_ls = c.init_values is not None and not c.attn_only_layer_scale
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(c.init_values))) if use_mlp_ls else None

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        x_attn = self.attn(self.norm1(x), rope)
        if self.gamma_1 is not None:
            x_attn = self.gamma_1 * x_attn
        x = x + x_attn
        x_mlp = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            x_mlp = self.gamma_2 * x_mlp
        return x + x_mlp


class EvaBlockPostNorm(nn.Module):
    """Residual post-norm block (``init_values`` has no effect, as in timm)."""

    def __init__(self, c: EvaConfig, kv_heads: Optional[int] = None) -> None:
        super().__init__()
        norm = norm_factory(c.norm_layer, c.norm_eps)
        self.attn = eva_attention(c, None, False)
        self.norm1 = norm(c.embed_dim)
        self.mlp = eva_mlp(c, post_norm=True)
        self.norm2 = norm(c.embed_dim)

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.norm1(self.attn(x, rope))
        return x + self.norm2(self.mlp(x))


__all__ = ["EvaBlock", "EvaBlockPostNorm", "eva_attention", "eva_mlp"]
