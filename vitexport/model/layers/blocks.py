"""The transformer blocks of timm's ``VisionTransformer`` (``block_fn``), with timm's state_dict keys.

- ``block``: pre-norm ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))`` (timm ``Block``);
- ``res_post``: residual post-norm ``x + norm1(attn(x))``, ``x + norm2(mlp(x))`` (``ResPostBlock``);
- ``parallel_scaling``: attention and MLP side by side from one fused input projection (ViT-22B,
  ``ParallelScalingBlock``);
- ``diff_parallel_scaling``: the same with differential attention (``DiffParallelScalingBlock``);
- ``parallel_things``: two attention branches, then two MLP branches, summed (``ParallelThingsBlock``).
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vitexport.model.config import BLOCK_FNS
from vitexport.model.layers.attention import Attention, DiffAttention, DiffHeads
from vitexport.model.layers.mlp import LayerScale, make_act, make_mlp
from vitexport.model.layers.norm import LAYER_NORM_EPS, make_norm

PARALLEL_BRANCHES = 2  # timm's ParallelThingsBlock default; VisionTransformer never changes it


@dataclass(frozen=True)
class BlockSpec:
    """What every block of one model shares: timm's block keyword arguments (``depth`` aside)."""

    dim: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_norm: bool = False
    scale_attn_norm: bool = False
    scale_mlp_norm: bool = False
    proj_bias: bool = True
    init_values: Optional[float] = None
    act_layer: str = "gelu"
    norm_layer: str = "layernorm"
    norm_eps: float = LAYER_NORM_EPS
    mlp_layer: str = "mlp"
    attn_layer: str = "attn"

    @property
    def mlp_hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)

    def norm(self, dim: int) -> nn.Module:
        """The model's norm layer over ``dim`` channels (timm's ``norm_layer(dim)``)."""
        return make_norm(self.norm_layer, dim, self.norm_eps)


def make_attn(spec: BlockSpec, depth: int) -> nn.Module:
    """timm ``_create_attn``: ``attn`` (Attention) or ``diff`` (DiffAttention, depth-dependent lambda)."""
    args = (spec.dim, spec.num_heads, spec.qkv_bias, spec.qk_norm, spec.scale_attn_norm, spec.proj_bias)
    if spec.attn_layer == "attn":
        return Attention(*args, norm_layer=spec.norm)
    if spec.attn_layer == "diff":
        return DiffAttention(*args, norm_layer=spec.norm, depth=depth)
    raise ValueError(f"unknown attention layer {spec.attn_layer!r}; expected 'attn' or 'diff'")


def make_block_mlp(spec: BlockSpec) -> nn.Module:
    mlp_norm = spec.norm if spec.scale_mlp_norm else None
    return make_mlp(spec.mlp_layer, spec.dim, spec.mlp_hidden, spec.act_layer, spec.proj_bias, mlp_norm)


def _layer_scale(dim: int, init_values: Optional[float]) -> nn.Module:
    return LayerScale(dim, init_values) if init_values else nn.Identity()


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, spec: BlockSpec, depth: int = 0) -> None:
        super().__init__()
        self.norm1 = spec.norm(spec.dim)
        self.attn = make_attn(spec, depth)
        self.ls1 = _layer_scale(spec.dim, spec.init_values)
        self.norm2 = spec.norm(spec.dim)
        self.mlp = make_block_mlp(spec)
        self.ls2 = _layer_scale(spec.dim, spec.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x


class ResPostBlock(nn.Module):
    """Residual post-norm block: ``x + norm1(attn(x))``, ``x + norm2(mlp(x))`` (``init_values`` only inits)."""

    def __init__(self, spec: BlockSpec, depth: int = 0) -> None:
        super().__init__()
        self.attn = make_attn(spec, depth)
        self.norm1 = spec.norm(spec.dim)
        self.mlp = make_block_mlp(spec)
        self.norm2 = spec.norm(spec.dim)
        if spec.init_values is not None:  # timm's init: both norms' weights start at init_values
            with torch.no_grad():
                self.norm1.weight.fill_(spec.init_values)
                self.norm2.weight.fill_(spec.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm1(self.attn(x))
        x = x + self.norm2(self.mlp(x))
        return x


def _fused_input(block: nn.Module, spec: BlockSpec, hidden: int) -> None:
    """The shared input side of the parallel-scaling blocks: ``in_norm``, ``in_proj``, ``mlp_bias``."""
    if spec.scale_attn_norm or spec.scale_mlp_norm:
        raise ValueError("parallel-scaling blocks have no scale norms (timm asserts the same)")
    block.in_norm = spec.norm(spec.dim)
    block.in_proj = nn.Linear(spec.dim, hidden + 3 * spec.dim, bias=spec.qkv_bias)
    block.in_split = [hidden, spec.dim, spec.dim, spec.dim]
    if spec.qkv_bias:  # the MLP's bias is part of in_proj.bias
        block.register_parameter("mlp_bias", None)
    else:
        block.mlp_bias = nn.Parameter(torch.zeros(hidden))


def _split_fused(y: torch.Tensor, sizes: List[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.split(y, sizes, -1)`` for four parts, as slices (ONNX Slice, not sequence ops)."""
    a, b, c = sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2]
    return y[..., :a], y[..., a:b], y[..., b:c], y[..., c:]


class ParallelScalingBlock(nn.Module):
    """ViT-22B parallel block: one ``in_proj`` gives MLP input and q, k, v; the two outputs are summed."""

    def __init__(self, spec: BlockSpec, depth: int = 0) -> None:
        super().__init__()
        dim, hidden = spec.dim, int(spec.mlp_ratio * spec.dim)  # timm: int(mlp_ratio * dim)
        self.num_heads = spec.num_heads
        self.head_dim = dim // spec.num_heads
        _fused_input(self, spec, hidden)
        self.q_norm = spec.norm(self.head_dim) if spec.qk_norm else nn.Identity()
        self.k_norm = spec.norm(self.head_dim) if spec.qk_norm else nn.Identity()
        self.mlp_act = make_act(spec.act_layer)
        self.attn_out_proj = nn.Linear(dim, dim, bias=spec.proj_bias)
        self.mlp_out_proj = nn.Linear(hidden, dim, bias=spec.proj_bias)
        self.ls = LayerScale(dim, spec.init_values) if spec.init_values is not None else nn.Identity()

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


class DiffParallelScalingBlock(DiffHeads):
    """``ParallelScalingBlock`` with differential attention and one fused ``out_proj``."""

    def __init__(self, spec: BlockSpec, depth: int = 0) -> None:
        super().__init__()
        dim, hidden = spec.dim, int(spec.mlp_ratio * spec.dim)
        head_dim = dim // spec.num_heads // 2
        _fused_input(self, spec, hidden)
        self.q_norm = spec.norm(head_dim) if spec.qk_norm else nn.Identity()
        self.k_norm = spec.norm(head_dim) if spec.qk_norm else nn.Identity()
        self._init_diff(spec.num_heads, head_dim, depth)
        self.mlp_act = make_act(spec.act_layer)
        self.out_proj = nn.Linear(dim + hidden, dim, bias=spec.proj_bias)
        self.ls = LayerScale(dim, spec.init_values) if spec.init_values is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_mlp, q, k, v = _split_fused(self.in_proj(self.in_norm(x)), self.in_split)
        if self.mlp_bias is not None:
            x_mlp = x_mlp + self.mlp_bias
        x_attn = self.attend(q, k, v)  # (B, N, C)
        y = self.out_proj(torch.cat((x_attn, self.mlp_act(x_mlp)), dim=-1))
        return x + self.ls(y)


class ParallelThingsBlock(nn.Module):
    """Two attention branches summed, then two MLP branches summed ("Three things", ``*_18x2_*``)."""

    def __init__(self, spec: BlockSpec, depth: int = 0) -> None:
        super().__init__()
        dim, norm = spec.dim, spec.norm
        self.attns = nn.ModuleList()
        self.ffns = nn.ModuleList()
        for _ in range(PARALLEL_BRANCHES):
            attn = [("norm", norm(dim)), ("attn", make_attn(spec, depth)), ("ls", _layer_scale(dim, spec.init_values))]
            ffn = [("norm", norm(dim)), ("mlp", make_block_mlp(spec)), ("ls", _layer_scale(dim, spec.init_values))]
            self.attns.append(nn.Sequential(OrderedDict(attn)))
            self.ffns.append(nn.Sequential(OrderedDict(ffn)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + torch.stack([attn(x) for attn in self.attns]).sum(dim=0)
        x = x + torch.stack([ffn(x) for ffn in self.ffns]).sum(dim=0)
        return x


BLOCK_CLASSES = {
    "block": Block,
    "res_post": ResPostBlock,
    "parallel_scaling": ParallelScalingBlock,
    "diff_parallel_scaling": DiffParallelScalingBlock,
    "parallel_things": ParallelThingsBlock,
}


def make_block(kind: str, spec: BlockSpec, depth: int) -> nn.Module:
    """Block number ``depth`` of ``kind`` (a ``BLOCK_FNS`` name)."""
    if kind not in BLOCK_CLASSES:
        raise ValueError(f"unknown block {kind!r}; expected one of {BLOCK_FNS}")
    return BLOCK_CLASSES[kind](spec, depth)
