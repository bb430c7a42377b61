"""The attention of timm's ``Eva`` blocks, with timm's state_dict keys: rotary embeddings on the patch tokens.

Both are registered (`vitexport.model.registry`) as `ROTARY` attention layers, named by ``EvaConfig.attn_type``
and built as every attention is, from the model's config and the block's index:

- `EvaAttention` (``attn_type='eva'``, timm ``EvaAttention``): fused ``qkv`` without bias plus separate
  ``q_bias`` and ``v_bias`` (the key bias is a fixed zero), or ``q_proj``/``k_proj``/``v_proj`` with no
  bias on ``k_proj``;
- `AttentionRope` (``attn_type='rope'``, timm ``AttentionRope``): an ordinary ``qkv`` (or separate
  projections, all with ``qkv_bias``), and grouped-query attention (fewer key/value heads, each shared
  by ``num_heads / num_kv_heads`` query heads) with separate projections.

Both: optional per-head q/k norm, the rotation (`vitexport.model.rope.apply_rope`) of every token
after the ``num_prefix_tokens`` class/register tokens, ``scaled_dot_product_attention`` (what timm
runs in eval), an optional norm of the output (``scale_attn_inner``), then ``proj``.
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vitexport.model.family_config import EvaConfig
from vitexport.model.layers.norm import NormFactory, norm_factory
from vitexport.model.registry import register
from vitexport.model.rope import apply_rope


def _norm_or_identity(norm: NormFactory, dim: int, enabled: bool) -> nn.Module:
    return norm(dim) if enabled else nn.Identity()


class RopeHeads(nn.Module):
    """What both attentions share after their projections: q/k norm, RoPE, grouped heads, SDPA, norm, proj.

    A subclass defines ``q_norm``, ``k_norm``, ``norm`` and ``proj``.
    """

    num_prefix_tokens: torch.jit.Final[int]
    rotate_half: torch.jit.Final[bool]
    num_kv_groups: torch.jit.Final[int]

    def _init_heads(self, num_heads: int, head_dim: int, num_kv_heads: int, num_prefix_tokens: int,
                    rotate_half: bool) -> None:
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.num_kv_groups = num_heads // num_kv_heads
        self.head_dim = head_dim
        self.attn_dim = head_dim * num_heads
        self.num_prefix_tokens = num_prefix_tokens
        self.rotate_half = rotate_half

    def _init_out(self, norm: NormFactory, dim: int, qk_norm: bool, scale_norm: bool) -> None:
        """timm's modules after the projections, in its order: ``q_norm``, ``k_norm``, ``norm``, ``proj``."""
        self.q_norm = _norm_or_identity(norm, self.head_dim, qk_norm)
        self.k_norm = _norm_or_identity(norm, self.head_dim, qk_norm)
        self.norm = _norm_or_identity(norm, self.attn_dim, scale_norm)
        self.proj = nn.Linear(self.attn_dim, dim)

    def _heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        """``(B, N, heads * d)`` -> ``(B, heads, N, d)``."""
        return t.reshape(t.shape[0], t.shape[1], heads, self.head_dim).transpose(1, 2)

    def _fused_heads(self, qkv: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, N, 3 * dim)`` -> q, k, v ``(B, heads, N, d)``."""
        B, N = qkv.shape[0], qkv.shape[1]
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _rotate(self, t: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """RoPE on the patch tokens of ``(B, heads, N, d)``; prefix tokens pass unchanged."""
        npt = self.num_prefix_tokens
        if npt == 0:  # a constant of the model: no empty slice in the graph
            return apply_rope(t, rope, self.rotate_half)
        return torch.cat([t[:, :, :npt, :], apply_rope(t[:, :, npt:, :], rope, self.rotate_half)], dim=2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        """``(B, heads, N, d)`` q and ``(B, kv_heads, N, d)`` k, v -> ``(B, N, dim)``."""
        B, N = q.shape[0], q.shape[2]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = self._rotate(q, rope).type_as(v)
            k = self._rotate(k, rope).type_as(v)
        if self.num_kv_groups > 1:  # head h reads key/value head h // groups (timm: repeat_interleave on dim 1)
            g = self.num_kv_groups
            k = k[:, :, None].expand(B, self.num_kv_heads, g, N, self.head_dim).reshape(B, self.num_heads, N, -1)
            v = v[:, :, None].expand(B, self.num_kv_heads, g, N, self.head_dim).reshape(B, self.num_heads, N, -1)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj(self.norm(x))


@register("attn", "eva", "timm.models.eva.EvaAttention")
class EvaAttention(RopeHeads):
    """timm ``EvaAttention``: keys ``q_bias``, ``v_bias``, ``qkv`` (fused) or ``q_proj``, ``k_proj``, ``v_proj``."""

    def __init__(self, cfg: EvaConfig, depth: int = 0) -> None:
        super().__init__()
        dim, num_heads, qkv_bias = cfg.embed_dim, cfg.num_heads, cfg.qkv_bias
        self._init_heads(num_heads, dim // num_heads, num_heads, cfg.num_prefix_tokens, cfg.rope_rotate_half)
        if cfg.qkv_fused:
            self.qkv = nn.Linear(dim, self.attn_dim * 3, bias=False)
            self.q_proj = self.k_proj = self.v_proj = None
            if qkv_bias:
                self.q_bias = nn.Parameter(torch.zeros(self.attn_dim))
                self.register_buffer("k_bias", torch.zeros(self.attn_dim), persistent=False)  # fixed at zero
                self.v_bias = nn.Parameter(torch.zeros(self.attn_dim))
            else:
                self.q_bias = self.k_bias = self.v_bias = None
        else:
            self.q_proj = nn.Linear(dim, self.attn_dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, self.attn_dim, bias=False)
            self.v_proj = nn.Linear(dim, self.attn_dim, bias=qkv_bias)
            self.qkv = None
            self.q_bias = self.k_bias = self.v_bias = None
        self._init_out(norm_factory(cfg.norm_layer, cfg.norm_eps), dim, cfg.qk_norm, cfg.scale_attn_inner)

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.qkv is not None:
            if self.q_bias is None:
                qkv = self.qkv(x)
            else:  # the key's bias is a fixed zero
                qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
            q, k, v = self._fused_heads(qkv)  # (B, h, N, d)
        else:
            q, k, v = self._heads(self.q_proj(x), self.num_heads), self._heads(self.k_proj(x), self.num_heads), \
                self._heads(self.v_proj(x), self.num_heads)
        return self.attend(q, k, v, rope)


@register("attn", "rope", "timm.layers.attention.AttentionRope")
class AttentionRope(RopeHeads):
    """timm ``AttentionRope``: ``qkv`` (fused, with ``qkv_bias``) or ``q_proj``, ``k_proj``, ``v_proj`` (GQA:
    block ``depth`` has ``cfg.kv_heads[depth]`` key/value heads)."""

    def __init__(self, cfg: EvaConfig, depth: int = 0) -> None:
        super().__init__()
        dim, num_heads, qkv_bias = cfg.embed_dim, cfg.num_heads, cfg.qkv_bias
        head_dim, kv_heads = dim // num_heads, cfg.kv_heads[depth]
        self._init_heads(num_heads, head_dim, kv_heads, cfg.num_prefix_tokens, cfg.rope_rotate_half)
        if cfg.qkv_fused:
            if self.num_kv_groups != 1:
                raise ValueError("a fused qkv projection has no grouped-query attention (timm asserts)")
            self.qkv = nn.Linear(dim, self.attn_dim * 3, bias=qkv_bias)
            self.q_proj = self.k_proj = self.v_proj = None
        else:
            self.qkv = None
            self.q_proj = nn.Linear(dim, self.attn_dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, head_dim * kv_heads, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, head_dim * kv_heads, bias=qkv_bias)
        self._init_out(norm_factory(cfg.norm_layer, cfg.norm_eps), dim, cfg.qk_norm, cfg.scale_attn_inner)

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.qkv is not None:
            q, k, v = self._fused_heads(self.qkv(x))  # (B, h, N, d)
        else:  # k and v: (B, kv_heads, N, d)
            q, k, v = self._heads(self.q_proj(x), self.num_heads), self._heads(self.k_proj(x), self.num_kv_heads), \
                self._heads(self.v_proj(x), self.num_kv_heads)
        return self.attend(q, k, v, rope)


__all__ = ["AttentionRope", "EvaAttention", "RopeHeads"]
