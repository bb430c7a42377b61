"""The transformer blocks of timm's ``VisionTransformer`` (``block_fn``), registered by name and built from the
model's `ViTConfig` and the block's index, with timm's state_dict keys.

- ``block``: pre-norm ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))`` (timm ``Block``);
- ``res_post``: residual post-norm ``x + norm1(attn(x))``, ``x + norm2(mlp(x))`` (``ResPostBlock``);
- ``parallel_scaling``: attention and MLP side by side from one fused input projection (ViT-22B,
  ``ParallelScalingBlock``);
- ``diff_parallel_scaling``: the same with differential attention (``DiffParallelScalingBlock``);
- ``parallel_things``: two attention branches, then two MLP branches, summed (``ParallelThingsBlock``).
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from collections import OrderedDict
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vitexport.model.config import ViTConfig
from vitexport.model.layers.attention import DiffHeads
from vitexport.model.layers.mlp import LayerScale
from vitexport.model.layers.norm import NormFactory, norm_factory
from vitexport.model.registry import build, register

PARALLEL_BRANCHES = 2  # timm's ParallelThingsBlock default; VisionTransformer never changes it
TIMM_VIT = "timm.models.vision_transformer"


def model_norm(cfg: ViTConfig) -> NormFactory:
    """The model's norm layer, ``dim -> module`` (timm's ``norm_layer``)."""
    return norm_factory(cfg.norm_layer, cfg.norm_eps)


def block_attn(cfg: ViTConfig, depth: int) -> nn.Module:
    """timm ``_create_attn``: the registered ``attn_layer`` of block ``depth``."""
    return build("attn", cfg.attn_layer, cfg, depth)


def block_mlp(cfg: ViTConfig) -> nn.Module:
    """The registered ``mlp_layer`` of width ``int(embed_dim * mlp_ratio)``, with the model's activation."""
    mlp_norm = model_norm(cfg) if cfg.scale_mlp_norm else None
    return build("mlp", cfg.mlp_layer, cfg.embed_dim, cfg.mlp_hidden, cfg.act_layer, cfg.proj_bias, mlp_norm)


def _layer_scale(dim: int, init_values: Optional[float]) -> nn.Module:
    return LayerScale(dim, init_values) if init_values else nn.Identity()


@register("block", "block", f"{TIMM_VIT}.Block")
class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, cfg: ViTConfig, depth: int = 0) -> None:
        super().__init__()
        dim, norm = cfg.embed_dim, model_norm(cfg)
        self.norm1 = norm(dim)
        self.attn = block_attn(cfg, depth)
        self.ls1 = _layer_scale(dim, cfg.init_values)
        self.norm2 = norm(dim)
        self.mlp = block_mlp(cfg)
        self.ls2 = _layer_scale(dim, cfg.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x


@register("block", "res_post", f"{TIMM_VIT}.ResPostBlock")
class ResPostBlock(nn.Module):
    """Residual post-norm block: ``x + norm1(attn(x))``, ``x + norm2(mlp(x))`` (``init_values`` only inits)."""

    def __init__(self, cfg: ViTConfig, depth: int = 0) -> None:
        super().__init__()
        norm = model_norm(cfg)
        self.attn = block_attn(cfg, depth)
        self.norm1 = norm(cfg.embed_dim)
        self.mlp = block_mlp(cfg)
        self.norm2 = norm(cfg.embed_dim)
        if cfg.init_values is not None:  # timm's init: both norms' weights start at init_values
            with torch.no_grad():
                self.norm1.weight.fill_(cfg.init_values)
                self.norm2.weight.fill_(cfg.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm1(self.attn(x))
        x = x + self.norm2(self.mlp(x))
        return x


def _fused_input(block: nn.Module, cfg: ViTConfig) -> None:
    """The shared input side of the parallel-scaling blocks: ``in_norm``, ``in_proj``, ``mlp_bias``."""
    if cfg.scale_attn_norm or cfg.scale_mlp_norm:
        raise ValueError("parallel-scaling blocks have no scale norms (timm asserts the same)")
    dim, hidden = cfg.embed_dim, cfg.mlp_hidden
    block.in_norm = model_norm(cfg)(dim)
    block.in_proj = nn.Linear(dim, hidden + 3 * dim, bias=cfg.qkv_bias)
    block.in_split = [hidden, dim, dim, dim]
    if cfg.qkv_bias:  # the MLP's bias is part of in_proj.bias
        block.register_parameter("mlp_bias", None)
    else:
        block.mlp_bias = nn.Parameter(torch.zeros(hidden))


def _split_fused(y: torch.Tensor, sizes: List[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.split(y, sizes, -1)`` for four parts, as slices (ONNX Slice, not sequence ops)."""
    a, b, c = sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2]
    return y[..., :a], y[..., a:b], y[..., b:c], y[..., c:]


@register("block", "parallel_scaling", f"{TIMM_VIT}.ParallelScalingBlock")
class ParallelScalingBlock(nn.Module):
    """ViT-22B parallel block: one ``in_proj`` gives MLP input and q, k, v; the two outputs are summed."""

    def __init__(self, cfg: ViTConfig, depth: int = 0) -> None:
        super().__init__()
        dim, hidden, norm = cfg.embed_dim, cfg.mlp_hidden, model_norm(cfg)  # timm: int(mlp_ratio * dim), the same
        self.num_heads = cfg.num_heads
        self.head_dim = dim // cfg.num_heads
        _fused_input(self, cfg)
        self.q_norm = norm(self.head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = norm(self.head_dim) if cfg.qk_norm else nn.Identity()
        self.mlp_act = build("act", cfg.act_layer)
        self.attn_out_proj = nn.Linear(dim, dim, bias=cfg.proj_bias)
        self.mlp_out_proj = nn.Linear(hidden, dim, bias=cfg.proj_bias)
        self.ls = LayerScale(dim, cfg.init_values) if cfg.init_values is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        x_mlp, q, k, v = _split_fused(self.in_proj(self.in_norm(x)), self.in_split)
        if self.mlp_bias is not None:
            x_mlp = x_mlp + self.mlp_bias
        q = self.q_norm(q.reshape(B, N, self.num_heads, self.head_dim)).transpose(1, 2)  # (B, h, N, d)
        k = self.k_norm(k.reshape(B, N, self.num_heads, self.head_dim)).transpose(1, 2)
        v = v.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        x_attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        y = self.attn_out_proj(x_attn) + self.mlp_out_proj(self.mlp_act(x_mlp))
        return x + self.ls(y)


@register("block", "diff_parallel_scaling", f"{TIMM_VIT}.DiffParallelScalingBlock")
class DiffParallelScalingBlock(DiffHeads):
    """``ParallelScalingBlock`` with differential attention and one fused ``out_proj``."""

    def __init__(self, cfg: ViTConfig, depth: int = 0) -> None:
        super().__init__()
        dim, hidden, norm = cfg.embed_dim, cfg.mlp_hidden, model_norm(cfg)
        head_dim = dim // cfg.num_heads // 2
        _fused_input(self, cfg)
        self.q_norm = norm(head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = norm(head_dim) if cfg.qk_norm else nn.Identity()
        self._init_diff(cfg.num_heads, head_dim, depth)
        self.mlp_act = build("act", cfg.act_layer)
        self.out_proj = nn.Linear(dim + hidden, dim, bias=cfg.proj_bias)
        self.ls = LayerScale(dim, cfg.init_values) if cfg.init_values is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_mlp, q, k, v = _split_fused(self.in_proj(self.in_norm(x)), self.in_split)
        if self.mlp_bias is not None:
            x_mlp = x_mlp + self.mlp_bias
        x_attn = self.attend(q, k, v)  # (B, N, C)
        y = self.out_proj(torch.cat((x_attn, self.mlp_act(x_mlp)), dim=-1))
        return x + self.ls(y)


@register("block", "parallel_things", f"{TIMM_VIT}.ParallelThingsBlock")
class ParallelThingsBlock(nn.Module):
    """Two attention branches summed, then two MLP branches summed ("Three things", ``*_18x2_*``)."""

    def __init__(self, cfg: ViTConfig, depth: int = 0) -> None:
        super().__init__()
        dim, norm = cfg.embed_dim, model_norm(cfg)
        self.attns = nn.ModuleList()
        self.ffns = nn.ModuleList()
        for _ in range(PARALLEL_BRANCHES):
            attn = [("norm", norm(dim)), ("attn", block_attn(cfg, depth)), ("ls", _layer_scale(dim, cfg.init_values))]
            ffn = [("norm", norm(dim)), ("mlp", block_mlp(cfg)), ("ls", _layer_scale(dim, cfg.init_values))]
            self.attns.append(nn.Sequential(OrderedDict(attn)))
            self.ffns.append(nn.Sequential(OrderedDict(ffn)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + torch.stack([attn(x) for attn in self.attns]).sum(dim=0)
        x = x + torch.stack([ffn(x) for ffn in self.ffns]).sum(dim=0)
        return x
