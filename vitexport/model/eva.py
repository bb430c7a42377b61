"""timm's ``Eva`` at any input size, with timm's state_dict keys: EVA, EVA-02, DINOv3, PE, RoPE-ViT, Sapiens2.

Reads top to bottom: patch embedding (pad right/bottom, conv; NHWC) -> class/register tokens and the
absolute table, if any (resampled to the input's grid as the ViT's) -> the rotary table of that grid,
if any (`vitexport.model.rope`) -> norm_pre -> blocks (each rotates q and k of the patch tokens;
RoPE-mixed gives each block its own table) -> norm -> pool (attention pool over every token for PE) ->
fc_norm -> head. The semantics are timm 1.0.31's eval mode with ``dynamic_img_size=True,
dynamic_img_pad=True``; patch dropout and RoPE coordinate augmentation are training-only and absent.
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from typing import Any, Optional, Tuple

import torch
from torch import nn

from vitexport.model.base import ModelBase
from vitexport.model.family_config import EvaConfig
from vitexport.model.layers import AttentionPoolLatent, PatchEmbed, norm_factory
from vitexport.model.layers.tokens import join_prefix, pool_tokens
from vitexport.model.registry import build
from vitexport.model.rope import make_rope


class Eva(ModelBase):
    """timm's ``Eva`` restricted to what exports: see `EvaConfig` for options."""

    __constants__ = (*ModelBase.__constants__, "dynamic_img_size", "no_embed_class", "rope_mixed")

    def __init__(self, config: Optional[EvaConfig] = None, **kwargs: Any) -> None:
        super().__init__()
        c = self._init_base(config, EvaConfig, kwargs)
        D = c.embed_dim
        norm = norm_factory(c.norm_layer, c.norm_eps)
        self.rope_mixed = c.use_rot_pos_emb and c.rope_type == "mixed"

        self.patch_embed = PatchEmbed(c.img_hw, c.patch_hw, c.in_chans, D, bias=not c.use_pre_transformer_norm,
                                      dynamic_img_pad=c.dynamic_img_pad, strict_img_size=not c.dynamic_img_size)
        self._init_tokens(c, self.patch_embed.num_patches, c.num_reg_tokens, pos_table=c.use_abs_pos_emb)
        self.rope = None
        if c.use_rot_pos_emb:
            self.rope = make_rope(c.rope_type, D, c.num_heads, c.depth, c.rope_temperature, c.rope_grid_offset,
                                  c.rope_grid_indexing, c.ref_feat_shape, c.rope_rotate_half)
        self.norm_pre = norm(D) if c.use_pre_transformer_norm else nn.Identity()
        self.blocks = nn.ModuleList([build("block", c.block_fn, c, i) for i in range(c.depth)])  # eva, eva_post_norm
        self.norm = norm(D) if c.post_norm_active else nn.Identity()
        self.attn_pool = None
        if c.global_pool == "map":  # PE: timm's AttentionPoolLatent with its own heads and MLP ratio, GELU
            self.attn_pool = AttentionPoolLatent(D, c.attn_pool_num_heads or c.num_heads,
                                                 c.attn_pool_mlp_ratio or c.mlp_ratio, norm, "gelu")
        self.fc_norm = norm(D) if c.fc_norm_active else nn.Identity()
        self.head = nn.Linear(D, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        self._init_linears()
        for p in (self.cls_token, self.reg_token, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)

    # ---- forward ----------------------------------------------------------
    def _pos_embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, gh, gw, D = x.shape
        pos_embed: Optional[torch.Tensor] = None
        if self.pos_embed is not None:
            pos_embed = self._grid_pos_embed(self.pos_embed, gh, gw)  # (1, [prefix +] gh*gw, D)
        x = x.reshape(B, gh * gw, D)  # (B, N, D)
        rope: Optional[torch.Tensor] = None
        if self.rope is not None:
            rope = self.rope(gh, gw)  # (N, 2 * head_dim), mixed: (depth, heads, N, 2 * head_dim)
        return join_prefix(x, self._prefix_tokens(B), pos_embed, self.no_embed_class), rope  # (B, prefix + N, D)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, gh, gw, D)
        x, rope = self._pos_embed(x)  # (B, T, D)
        x = self.norm_pre(x)
        for i, blk in enumerate(self.blocks):
            if self.rope_mixed and rope is not None:
                x = blk(x, rope[i])  # this block's own frequencies: (heads, N, 2 * head_dim)
            else:
                x = blk(x, rope)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_pool is not None:
            return self.attn_pool(x)  # every token, prefix included (timm's Eva)
        return pool_tokens(x, self.global_pool, self.num_prefix_tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc_norm(self.pool(x))
        return x if pre_logits else self.head(x)


__all__ = ["Eva"]
