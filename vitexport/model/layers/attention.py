"""Attention layers with timm's state_dict keys: self-attention and differential attention (registered by name,
built from the model's config and the block's index), and MAP pooling.

All go through ``scaled_dot_product_attention`` (what timm runs by default), whose ONNX form
at opset 18 is standard MatMul/Softmax (or a fused op on request, see vitexport.export.attention).
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vitexport.model.config import ViTConfig
from vitexport.model.layers.mlp import Mlp
from vitexport.model.layers.norm import NormFactory, RmsNorm, norm_factory
from vitexport.model.registry import register


def _norm_or_identity(norm_layer: Optional[NormFactory], dim: int, enabled: bool) -> nn.Module:
    if enabled:
        assert norm_layer is not None, "a norm layer is needed for qk_norm / scale_norm"
        return norm_layer(dim)
    return nn.Identity()


def _init_projections(module: nn.Module, cfg: ViTConfig, head_dim: int) -> None:
    """timm's attention parameters, in its order: ``qkv``, ``q_norm``, ``k_norm``, ``norm``, ``proj``
    (``norm`` with ``scale_attn_norm``, timm's ``scale_norm``)."""
    dim, norm_layer = cfg.embed_dim, norm_factory(cfg.norm_layer, cfg.norm_eps)
    module.qkv = nn.Linear(dim, dim * 3, bias=cfg.qkv_bias)
    module.q_norm = _norm_or_identity(norm_layer, head_dim, cfg.qk_norm)
    module.k_norm = _norm_or_identity(norm_layer, head_dim, cfg.qk_norm)
    module.norm = _norm_or_identity(norm_layer, dim, cfg.scale_attn_norm)
    module.proj = nn.Linear(dim, dim, bias=cfg.proj_bias)


@register("attn", "attn", "attn", "timm.layers.Attention")
class Attention(nn.Module):
    """timm ``Attention``: ``qkv -> [q/k norm] -> SDPA -> [norm (scale_norm)] -> proj``."""

    def __init__(self, cfg: ViTConfig, depth: int = 0) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.embed_dim // cfg.num_heads
        _init_projections(self, cfg, self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(self.norm(x))


def lambda_param(head_dim: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(head_dim) * 0.1)  # timm: normal(std=0.1)


class DiffHeads(nn.Module):
    """Differential attention over flat q, k, v (Differential Transformer; timm's ``dual_lambda=False``):
    ``softmax(q1 k1) v - lambda * softmax(q2 k2) v`` with ``lambda = exp(q1.k1) - exp(q2.k2) + lambda_init``,
    then ``sub_norm`` and ``* (1 - lambda_init)``. Shared by `DiffAttention` and the differential
    parallel block; the subclass defines ``q_norm`` and ``k_norm``.
    """

    lambda_init: torch.jit.Final[float]

    def _init_diff(self, num_heads: int, head_dim: int, depth: int) -> None:
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.lambda_q1, self.lambda_k1 = lambda_param(head_dim), lambda_param(head_dim)
        self.lambda_q2, self.lambda_k2 = lambda_param(head_dim), lambda_param(head_dim)
        self.sub_norm = RmsNorm(2 * head_dim, eps=1e-5)
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * depth)  # timm set_lambda_init(block index)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, N, C = q.shape
        h, d = self.num_heads, self.head_dim
        q = self.q_norm(q.reshape(B, N, 2 * h, d).transpose(1, 2))  # (B, 2h, N, d)
        k = self.k_norm(k.reshape(B, N, 2 * h, d).transpose(1, 2))
        v = v.reshape(B, N, h, 2 * d).transpose(1, 2)  # (B, h, N, 2d)
        lambda_1 = torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1, dim=-1).float())
        lambda_2 = torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2, dim=-1).float())
        lambda_full = (lambda_1 - lambda_2 + self.lambda_init).type_as(q)
        q1, q2 = q.reshape(B, h, 2, N, d).unbind(2)  # (B, h, N, d) each
        k1, k2 = k.reshape(B, h, 2, N, d).unbind(2)
        x = F.scaled_dot_product_attention(q1, k1, v) - lambda_full * F.scaled_dot_product_attention(q2, k2, v)
        x = self.sub_norm(x) * (1 - self.lambda_init)  # (B, h, N, 2d)
        return x.transpose(1, 2).reshape(B, N, C)


@register("attn", "diff", "diff", "timm.layers.DiffAttention")
class DiffAttention(DiffHeads):
    """timm ``DiffAttention``, as VisionTransformer builds it for ``attn_layer='diff'`` (``depth`` sets lambda_init)."""

    def __init__(self, cfg: ViTConfig, depth: int = 0) -> None:
        super().__init__()
        head_dim = cfg.embed_dim // cfg.num_heads // 2
        _init_projections(self, cfg, head_dim)
        self._init_diff(cfg.num_heads, head_dim, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C = x.shape[-1]
        qkv = self.qkv(x)  # (B, N, 3C); sliced, not chunked: chunk exports as ONNX sequence ops
        x = self.attend(qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :])  # (B, N, C)
        return self.proj(self.norm(x))


class AttentionPoolLatent(nn.Module):
    """timm ``AttentionPoolLatent`` as VisionTransformer builds it for ``global_pool='map'`` (SigLIP).

    One learned latent query attends over the tokens; then ``proj`` and a residual MLP on the
    normalised result; the latent's output is the pooled feature ``(B, D)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm_layer: NormFactory, act_layer: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.latent = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, dim), std=dim**-0.5))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.norm = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(self.latent.expand(B, -1, -1)).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, h, N, d)
        k, v = kv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, d)
        x = self.proj(x.transpose(1, 2).reshape(B, 1, C))
        x = x + self.mlp(self.norm(x))
        return x[:, 0]  # (B, D)
