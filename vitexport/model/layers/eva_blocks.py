"""The blocks of timm's ``Eva``, registered (`vitexport.model.registry`) as `ROTARY` blocks, with timm's state_dict
keys; built as every block is, from the model's config (`EvaConfig`) and the block's index.

- ``eva`` (`EvaBlock`, pre-norm): ``x + gamma_1 * attn(norm1(x), rope)``, ``x + gamma_2 * mlp(norm2(x))``; the layer
  scales are the parameters ``gamma_1``/``gamma_2`` (``init_values``), ``gamma_2`` absent with
  ``attn_only_layer_scale`` (Sapiens2);
- ``eva_post_norm`` (`EvaBlockPostNorm`, ``use_post_norm``, EVA-02 enormous): ``x + norm1(attn(x, rope))``,
  ``x + norm2(mlp(x))``.

The attention is the registered one ``attn_type`` names (``eva``, ``rope``); the MLP the registered one timm's Eva
chooses (``EvaConfig.mlp_layer``: GELU ``mlp``, packed ``swiglu_packed`` or ``swiglu``).
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from typing import Optional

import torch
from torch import nn

from vitexport.model.family_config import EvaConfig
from vitexport.model.layers.norm import norm_factory
from vitexport.model.registry import build, register


def eva_mlp(c: EvaConfig) -> nn.Module:
    """The registered MLP timm's Eva blocks build for ``c`` (a norm inside it with ``scale_mlp``)."""
    norm = norm_factory(c.norm_layer, c.norm_eps) if c.scale_mlp else None
    return build("mlp", c.mlp_layer, c.embed_dim, c.mlp_hidden, c.mlp_act, True, norm)


def _layer_scale(dim: int, init_values: Optional[float], enabled: bool = True) -> Optional[nn.Parameter]:
    return nn.Parameter(torch.full((dim,), float(init_values))) if init_values is not None and enabled else None


@register("block", "eva", "timm.models.eva.EvaBlock")
class EvaBlock(nn.Module):
    """Pre-norm block with optional layer scales ``gamma_1`` (attention) and ``gamma_2`` (MLP)."""

    def __init__(self, c: EvaConfig, depth: int = 0) -> None:
        super().__init__()
        dim, norm = c.embed_dim, norm_factory(c.norm_layer, c.norm_eps)
        self.norm1 = norm(dim)
        self.attn = build("attn", c.attn_type, c, depth)
        self.gamma_1 = _layer_scale(dim, c.init_values)
        self.norm2 = norm(dim)
        self.mlp = eva_mlp(c)
        self.gamma_2 = _layer_scale(dim, c.init_values, not c.attn_only_layer_scale)

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        x_attn = self.attn(self.norm1(x), rope)
        if self.gamma_1 is not None:
            x_attn = self.gamma_1 * x_attn
        x = x + x_attn
        x_mlp = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            x_mlp = self.gamma_2 * x_mlp
        return x + x_mlp


@register("block", "eva_post_norm", "timm.models.eva.EvaBlockPostNorm")
class EvaBlockPostNorm(nn.Module):
    """Residual post-norm block (``init_values`` has no effect, as in timm; the config refuses q/k norm and
    grouped heads here, as timm asserts)."""

    def __init__(self, c: EvaConfig, depth: int = 0) -> None:
        super().__init__()
        norm = norm_factory(c.norm_layer, c.norm_eps)
        self.attn = build("attn", c.attn_type, c, depth)
        self.norm1 = norm(c.embed_dim)
        self.mlp = eva_mlp(c)
        self.norm2 = norm(c.embed_dim)

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.norm1(self.attn(x, rope))
        return x + self.norm2(self.mlp(x))


__all__ = ["EvaBlock", "EvaBlockPostNorm", "eva_mlp"]
