"""timm's ``NaFlexVit`` on NCHW images at any size, with timm's state_dict keys (NaFlexViT, SigLIP2-NaFlex, C-RADIO).

Reads top to bottom: embedding (``embeds``: pad right/bottom, then a linear projection of flattened
patches (timm's default, ``(ph, pw, C)`` per patch) or a conv -> optional norm -> the position table
resampled to the input's grid, added to the patches only -> class and register tokens prepended) ->
norm_pre -> blocks (timm's ViT ``Block``) -> norm -> pool -> fc_norm -> head.

The position table is NaFlexViT's own: a ``(1, h, w, D)`` grid resampled with ``pos_embed_interp_mode``
(bicubic antialiased by default; bilinear with or without antialias and ``align_corners`` for SigLIP2 and
RADIO), or, with ``pos_embed_ar_preserving``, resampled to a square of the larger grid side and cropped
top-left; or ``factorized``: a row table and a column table, linearly resampled and summed. timm skips
the resampling when the grid equals the table's; resampling to the same size is the identity, so the
graph always resamples (`vitexport.model.interp` for its exported form). The NaFlex mode of timm
(pre-patchified input with patch coordinates and masks) is not this model's input.
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations (torch.jit.Final).

from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vitexport.model.base import ModelBase
from vitexport.model.family_config import NAFLEX_NORM_EPS, NaFlexConfig
from vitexport.model.interp import resample_1d, resample_2d
from vitexport.model.layers import AttentionPoolLatent, norm_factory, pad_to_patch
from vitexport.model.layers.tokens import join_prefix, pool_tokens
from vitexport.model.registry import build


class NaFlexEmbeds(nn.Module):
    """timm ``NaFlexEmbeds`` for NCHW input: keys ``cls_token``, ``reg_token``, ``pos_embed`` (or ``pos_embed_y``,
    ``pos_embed_x``), ``proj``, ``norm``."""

    is_linear: torch.jit.Final[bool]
    channels_last: torch.jit.Final[bool]
    dynamic_img_pad: torch.jit.Final[bool]
    ar_preserving: torch.jit.Final[bool]
    interp_mode: torch.jit.Final[str]
    antialias: torch.jit.Final[bool]
    align_corners: torch.jit.Final[bool]

    def __init__(self, c: NaFlexConfig) -> None:
        super().__init__()
        D, (ph, pw) = c.embed_dim, c.patch_hw
        self.patch_size = (ph, pw)
        self.is_linear = c.embed_proj_type == "linear"
        self.channels_last = c.patchify_channels_last
        self.dynamic_img_pad = c.dynamic_img_pad
        self.ar_preserving = c.pos_embed_ar_preserving
        self.interp_mode = c.pos_embed_interp_mode
        self.antialias = c.pos_embed_antialias
        self.align_corners = c.pos_embed_align_corners
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if c.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, c.reg_tokens, D)) if c.reg_tokens else None
        if self.is_linear:
            self.proj = nn.Linear(ph * pw * c.in_chans, D, bias=not c.pre_norm)
        else:
            self.proj = nn.Conv2d(c.in_chans, D, kernel_size=(ph, pw), stride=(ph, pw), bias=not c.pre_norm)
        self.norm = norm_factory(c.embed_norm_layer, NAFLEX_NORM_EPS)(D) if c.embed_norm_layer else nn.Identity()
        self.pos_embed = self.pos_embed_y = self.pos_embed_x = None
        h, w = c.pos_grid
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, h, w, D) * 0.02)
        elif c.pos_embed == "factorized":
            self.pos_embed_y = nn.Parameter(torch.randn(1, h, D) * 0.02)
            self.pos_embed_x = nn.Parameter(torch.randn(1, w, D) * 0.02)

    def _patchify(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """timm ``batch_patchify``: ``(B, C, H, W)`` -> ``(B, gh*gw, ph*pw*C)`` (or ``C*ph*pw``), row-major patches."""
        ph, pw = self.patch_size
        if self.dynamic_img_pad:
            x = pad_to_patch(x, ph, pw)
        else:
            torch._assert(x.shape[-2] % ph == 0 and x.shape[-1] % pw == 0,
                          "Input height and width must be divisible by the patch size (or set dynamic_img_pad).")
        B, C, H, W = x.shape
        gh, gw = H // ph, W // pw
        x = x.reshape(B, C, gh, ph, gw, pw)
        x = x.permute(0, 2, 4, 3, 5, 1) if self.channels_last else x.permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, gh * gw, ph * pw * C), gh, gw

    def _learned(self, gh: int, gw: int, portable_form: bool) -> torch.Tensor:
        """The ``(1, h, w, D)`` table on a ``gh x gw`` grid: ``(1, gh*gw, D)`` float32."""
        assert self.pos_embed is not None
        table = self.pos_embed.permute(0, 3, 1, 2).float()  # (1, D, h, w)
        size: List[int] = [max(gh, gw), max(gh, gw)] if self.ar_preserving else [gh, gw]
        if portable_form and not torch.jit.is_scripting():
            grid = resample_2d(table, size, self.interp_mode, self.antialias, self.align_corners, True)
        else:
            grid = F.interpolate(table, size=size, mode=self.interp_mode, align_corners=self.align_corners,
                                 antialias=self.antialias)
        return grid[:, :, :gh, :gw].flatten(2).transpose(1, 2)  # (1, gh*gw, D)

    def _axis(self, table: torch.Tensor, length: int, keep: int, portable_form: bool) -> torch.Tensor:
        """One factorized ``(1, L, D)`` table linearly resampled to ``length``, first ``keep`` rows."""
        t = table.permute(0, 2, 1).float()  # (1, D, L)
        if portable_form and not torch.jit.is_scripting():
            t = resample_1d(t, length, True)
        else:
            t = F.interpolate(t, size=length, mode="linear", align_corners=False)
        return t.permute(0, 2, 1)[:, :keep]  # (1, keep, D)

    def _factorized(self, gh: int, gw: int, dtype: torch.dtype, portable_form: bool) -> torch.Tensor:
        assert self.pos_embed_y is not None and self.pos_embed_x is not None
        len_y, len_x = (max(gh, gw), max(gh, gw)) if self.ar_preserving else (gh, gw)
        pe_y = self._axis(self.pos_embed_y, len_y, gh, portable_form).to(dtype)  # (1, gh, D)
        pe_x = self._axis(self.pos_embed_x, len_x, gw, portable_form).to(dtype)  # (1, gw, D)
        return (pe_y[:, :, None] + pe_x[:, None, :]).flatten(1, 2)  # (1, gh*gw, D)

    def forward(self, x: torch.Tensor, portable_form: bool = False) -> torch.Tensor:
        B = x.shape[0]
        if self.is_linear:
            x, gh, gw = self._patchify(x)
            x = self.proj(x)  # (B, N, D)
        else:
            if self.dynamic_img_pad:
                x = pad_to_patch(x, self.patch_size[0], self.patch_size[1])
            x = self.proj(x)  # (B, D, gh, gw)
            gh, gw = x.shape[-2], x.shape[-1]
            x = x.flatten(2).transpose(1, 2)
        x = self.norm(x)
        if self.pos_embed is not None:
            x = x + self._learned(gh, gw, portable_form).to(x.dtype)
        elif self.pos_embed_y is not None:
            x = x + self._factorized(gh, gw, x.dtype, portable_form)
        prefix: List[torch.Tensor] = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(B, -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(B, -1, -1))
        return join_prefix(x, prefix, None, True)  # (B, prefix + N, D): the table is added to the patches only


class NaFlexVit(ModelBase):
    """timm's ``NaFlexVit`` on NCHW images: see `NaFlexConfig` for options."""

    __constants__ = (*ModelBase.__constants__, "pool_include_prefix")

    def __init__(self, config: Optional[NaFlexConfig] = None, **kwargs: Any) -> None:
        super().__init__()
        c = self._init_base(config, NaFlexConfig, kwargs)
        D = c.embed_dim
        norm = norm_factory(c.norm_layer or "layernorm", NAFLEX_NORM_EPS)
        self.pool_include_prefix = c.pool_include_prefix

        self.embeds = NaFlexEmbeds(c)
        self.norm_pre = norm(D) if c.pre_norm else nn.Identity()
        blocks = c.block_config()  # timm's ViT Block with NaFlexVit's arguments
        self.blocks = nn.Sequential(*[build("block", "block", blocks, i) for i in range(c.depth)])
        self.norm = norm(D) if c.final_norm and not c.fc_norm_active else nn.Identity()
        self.attn_pool = None
        if c.global_pool == "map":
            self.attn_pool = AttentionPoolLatent(D, c.attn_pool_num_heads or c.num_heads,
                                                 c.attn_pool_mlp_ratio or c.mlp_ratio, norm, c.act)
        self.fc_norm = norm(D) if c.final_norm and c.fc_norm_active else nn.Identity()
        self.head = nn.Linear(D, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self._init_linears()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        portable_form = False
        if not torch.jit.is_scripting():
            portable_form = self.portable_resampling()  # set by the ONNX exporter (`ModelBase.resampling`)
        x = self.embeds(x, portable_form)  # (B, T, D)
        x = self.norm_pre(x)
        x = self.blocks(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_pool is not None:
            return self.attn_pool(x if self.pool_include_prefix else x[:, self.num_prefix_tokens :])
        return pool_tokens(x, self.global_pool, self.num_prefix_tokens, self.pool_include_prefix)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc_norm(self.pool(x))
        return x if pre_logits else self.head(x)


__all__ = ["NaFlexEmbeds", "NaFlexVit"]
