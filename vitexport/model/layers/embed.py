"""Pure numerics of the dynamic-pad ViT, and its patch embedding.

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

from vitexport._util.geometry import padded_size  # noqa: F401 - the integer form of pad_to_patch, re-exported
from vitexport.model.resample import resample_bicubic_aa

logger = logging.getLogger(__name__)


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
    (`vitexport.model.resample`) instead of ``F.interpolate``, whose ONNX form is one Resize.
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
    """Conv patch embedding with optional right/bottom padding (and norm); returns NHWC tokens."""

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
        norm: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.img_size = img_size
        self.grid_size = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.dynamic_img_pad = dynamic_img_pad
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = norm if norm is not None else nn.Identity()  # timm's embed_norm_layer (AIMv2)

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
        return self.norm(x.permute(0, 2, 3, 1))  # (B, gh, gw, D)
