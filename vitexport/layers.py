"""Pure numerics of the dynamic-pad ViT, and its building blocks.

Every shape-dependent computation that must match timm lives here, in one place:
padding to the patch grid and the resampling of positional embeddings. Both are
written without Python branches on tensor sizes, so that an exported graph keeps
them for every input size (see docs/numerics.md).
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations (torch.jit.Final).

import logging
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vitexport.geometry import padded_size  # noqa: F401 - the integer form of pad_to_patch, re-exported
from vitexport.resample import resample_bicubic_aa

logger = logging.getLogger(__name__)

LAYER_NORM_EPS = 1e-6  # timm.layers.LayerNorm default


def pad_to_patch(x: torch.Tensor, patch_h: int, patch_w: int) -> torch.Tensor:
    """Zero-pad an NCHW tensor on the right and bottom to multiples of the patch size."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h = (patch_h - h % patch_h) % patch_h
    pad_w = (patch_w - w % patch_w) % patch_w
    return F.pad(x, (0, pad_w, 0, pad_h))  # (B, C, H + pad_h, W + pad_w)


def resample_abs_pos_embed(
    posemb: torch.Tensor,
    new_size: List[int],
    old_size: List[int],
    num_prefix_tokens: int = 1,
    portable: bool = False,
) -> torch.Tensor:
    """Resample ``(1, prefix + H_old*W_old, D)`` embeddings to a ``new_size`` grid.

    Antialiased bicubic (Keys a=-0.5), ``align_corners=False``, computed in float32 and
    cast back; prefix tokens (CLS, registers) are split off and re-attached unchanged.
    There is deliberately no early return when the sizes match: resampling to the
    same grid is an exact identity, and a branch would vanish from exported graphs.
    ``portable=True`` (ONNX export only) computes the same with elementary ops
    (`vitexport.resample`) instead of ``F.interpolate``, whose ONNX form is one Resize.
    """
    embed_dim = posemb.shape[-1]
    orig_dtype = posemb.dtype
    prefix = posemb[:, :num_prefix_tokens]  # (1, P, D)
    grid = posemb[:, num_prefix_tokens:]  # (1, H_old*W_old, D)
    grid = grid.float().reshape(1, old_size[0], old_size[1], embed_dim).permute(0, 3, 1, 2)  # (1, D, Ho, Wo)
    if portable and not torch.jit.is_scripting():
        grid = resample_bicubic_aa(grid, new_size)
    else:
        grid = F.interpolate(grid, size=new_size, mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, embed_dim).to(orig_dtype)  # (1, Hn*Wn, D)
    return torch.cat([prefix, grid], dim=1)


class PatchEmbed(nn.Module):
    """Conv patch embedding with optional right/bottom padding; returns NHWC tokens."""

    dynamic_img_pad: torch.jit.Final[bool]
    strict_img_size: torch.jit.Final[bool]

    def __init__(
        self,
        img_size: Tuple[int, int],
        patch_size: Tuple[int, int],
        in_chans: int,
        embed_dim: int,
        bias: bool = True,
        dynamic_img_pad: bool = True,
        strict_img_size: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.img_size = img_size
        self.grid_size = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.dynamic_img_pad = dynamic_img_pad
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def set_input_size(self, img_size: Tuple[int, int]) -> None:
        self.img_size = img_size
        self.grid_size = (img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2], x.shape[-1]
        if self.strict_img_size:
            torch._assert(H == self.img_size[0], f"Input height ({H}) doesn't match model ({self.img_size[0]}).")
            torch._assert(W == self.img_size[1], f"Input width ({W}) doesn't match model ({self.img_size[1]}).")
        elif not self.dynamic_img_pad:
            torch._assert(
                H % self.patch_size[0] == 0,
                f"Input height ({H}) should be divisible by patch size ({self.patch_size[0]}).",
            )
            torch._assert(
                W % self.patch_size[1] == 0,
                f"Input width ({W}) should be divisible by patch size ({self.patch_size[1]}).",
            )
        if self.dynamic_img_pad:
            x = pad_to_patch(x, self.patch_size[0], self.patch_size[1])  # (B, C, Hp, Wp)
        x = self.proj(x)  # (B, D, gh, gw)
        return x.permute(0, 2, 3, 1)  # (B, gh, gw, D)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=LAYER_NORM_EPS) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=LAYER_NORM_EPS) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x
