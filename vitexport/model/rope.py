"""Rotary position embeddings, computed from the input's patch grid: the numerics of timm's RoPE modules.

Every table is built in the forward from the grid ``(gh, gw)`` the patch embedding produced, with
no Python branch on its size, so an exported graph computes sin and cos for every input size
(Range, arithmetic, Sin, Cos; standard ops at opset 18). The arithmetic follows timm's order op by
op (timm 1.0.31, ``timm/layers/pos_embed_sincos.py``), in float32 whatever the model's dtype:

- `AxialRope` (timm ``RotaryEmbeddingCat`` with ``in_pixels=False``: EVA-02, PE, RoPE-ViT axial, timm's
  SBB RoPE ViTs): per axis, positions ``arange(n) + grid_offset``, rescaled ``t / n * ref`` when a
  reference grid is set (EVA's fine-tune scheme), times frequency bands ``1 / temperature ** (k / nb)``;
- `DinoV3Rope` (``RotaryEmbeddingDinoV3``: DINOv3, LingBot, Sapiens2): 0.5-centred positions
  ``(arange(n) + 0.5 + offset) / n`` mapped to ``[-1, 1]``, angles ``2 pi * coord / period``;
- `MixedRope` (``RotaryEmbeddingMixed``: RoPE-ViT mixed): learned per-block, per-head frequencies
  ``freqs`` (a parameter, key ``rope.freqs``) times the integer positions of both axes, summed.

``grid_indexing='xy'`` puts the column coordinate first (timm swaps the grid's axes, and the reference
grid's). Axial and DINOv3 tables are ``(N, 2 * head_dim)`` (sin then cos); mixed ones
``(depth, heads, N, 2 * head_dim)``. `apply_rope` rotates q or k, interleaved pairs or halves
(``rotate_half``), and casts the result back to the input's dtype as timm does. Training-time
coordinate augmentation (shift, jitter, rescale) is left out, as in timm's eval mode.
"""

# No `from __future__ import annotations` here: TorchScript compiles these modules.

import math
from typing import List, Optional, Tuple

import torch
from torch import nn


def positions(n: int, device: torch.device) -> torch.Tensor:
    """``0, 1, ..., n-1`` in float32 (int64 Range then Cast, as timm's grid)."""
    return torch.arange(n, device=device).to(torch.float32)


def mesh(t_h: torch.Tensor, t_w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-token (row-major over ``(gh, gw)``) coordinates from the two axes: ``meshgrid(indexing='ij')``, flat."""
    gh, gw = t_h.shape[0], t_w.shape[0]
    return t_h[:, None].expand(gh, gw).reshape(-1), t_w[None, :].expand(gh, gw).reshape(-1)  # (N,), (N,)


def rope_layout(x: torch.Tensor, rotate_half: bool) -> torch.Tensor:
    """``(..., d/2)`` per-frequency values -> ``(..., d)``: halves ``[f0 f1 .. f0 f1 ..]`` or pairs ``[f0 f0 ..]``."""
    if rotate_half:
        return torch.cat([x, x], dim=-1)
    return torch.stack([x, x], dim=-1).flatten(-2)  # timm: repeat_interleave(2, -1)


def sin_cos_table(angles: torch.Tensor, rotate_half: bool) -> torch.Tensor:
    """``(..., d/2)`` angles -> ``(..., 2d)``: ``[sin, cos]`` in the rotation's layout."""
    return torch.cat([rope_layout(angles.sin(), rotate_half), rope_layout(angles.cos(), rotate_half)], dim=-1)


def apply_rope(x: torch.Tensor, table: torch.Tensor, rotate_half: bool) -> torch.Tensor:
    """timm ``apply_rot_embed_cat``: ``x * cos + rot(x) * sin``, computed in the promoted dtype, cast to x's."""
    d = table.shape[-1] // 2
    sin, cos = table[..., :d], table[..., d:]
    if rotate_half:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # [-x_h1, x_h0]
    else:
        rotated = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)  # [-x1, x0, -x3, x2, ...]
    return (x * cos + rotated * sin).to(x.dtype)


class Float32Table(nn.Module):
    """A RoPE module with one frequency buffer, rebuilt in float32 when the model is cast (timm's ``_apply``):
    sin and cos stay float32 in a float16 model. A subclass computes it in ``_table``. The grid options of timm's
    tables (``temperature``, ``grid_offset``, ``grid_indexing``, ``rotate_half``) are kept here."""

    __constants__ = ("grid_offset", "xy", "rotate_half")  # TorchScript constants (a subclass adds its own)

    def __init__(self, head_dim: int, temperature: float, grid_offset: float, grid_indexing: str,
                 rotate_half: bool) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.temperature = float(temperature)
        self.grid_offset = float(grid_offset)
        self.xy = grid_indexing == "xy"
        self.rotate_half = rotate_half

    def _table(self) -> torch.Tensor:
        raise NotImplementedError

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        for name, buf in list(self.named_buffers(recurse=False)):
            if buf.dtype != torch.float32:
                setattr(self, name, self._table().to(buf.device))
        return module


class AxialRope(Float32Table):
    """timm ``RotaryEmbeddingCat(in_pixels=False)``: ``forward(gh, gw) -> (gh*gw, 2 * head_dim)``."""

    __constants__ = (*Float32Table.__constants__, "ref_h", "ref_w")

    def __init__(self, head_dim: int, temperature: float = 10000.0, grid_offset: float = 0.0, grid_indexing: str = "ij",
                 ref_feat_shape: Optional[Tuple[int, int]] = None, rotate_half: bool = False) -> None:
        super().__init__(head_dim, temperature, grid_offset, grid_indexing, rotate_half)
        self.ref_h, self.ref_w = ref_feat_shape if ref_feat_shape is not None else (0, 0)
        self.num_bands = head_dim // 4
        self.register_buffer("bands", self._table(), persistent=False)  # (head_dim // 4,)

    def _table(self) -> torch.Tensor:
        """timm ``freq_bands(step=1)``: ``1 / temperature ** (arange(nb) / nb)``, float32 on the CPU."""
        exp = torch.arange(0, self.num_bands, 1, dtype=torch.int64).to(torch.float32) / self.num_bands
        return 1.0 / (self.temperature**exp)

    def forward(self, gh: int, gw: int) -> torch.Tensor:
        t_h = positions(gh, self.bands.device) + self.grid_offset  # (gh,)
        t_w = positions(gw, self.bands.device) + self.grid_offset  # (gw,)
        if self.ref_h > 0:  # EVA: positions rescaled so that this grid spans the reference (pretraining) grid
            t_h = t_h / gh * self.ref_h
            t_w = t_w / gw * self.ref_w
        c_h, c_w = mesh(t_h, t_w)  # (N,) each
        first, second = (c_w, c_h) if self.xy else (c_h, c_w)
        angles = torch.cat([first[:, None] * self.bands, second[:, None] * self.bands], dim=-1)  # (N, head_dim / 2)
        return sin_cos_table(angles, self.rotate_half)  # (N, 2 * head_dim)


class DinoV3Rope(Float32Table):
    """timm ``RotaryEmbeddingDinoV3`` (normalize_coords='separate'): ``forward(gh, gw) -> (gh*gw, 2 * head_dim)``."""

    def __init__(self, head_dim: int, temperature: float = 100.0, grid_offset: float = 0.0, grid_indexing: str = "ij",
                 rotate_half: bool = True) -> None:
        super().__init__(head_dim, temperature, grid_offset, grid_indexing, rotate_half)
        self.register_buffer("periods", self._table(), persistent=False)  # (head_dim // 4,)

    def _table(self) -> torch.Tensor:
        """timm ``_compute_periods``: ``temperature ** (2 * arange(d/4) / (d/2))``, float32 on the CPU."""
        exponents = 2.0 * torch.arange(self.head_dim // 4, dtype=torch.float32) / (self.head_dim // 2)
        return self.temperature**exponents

    def forward(self, gh: int, gw: int) -> torch.Tensor:
        t_h = (positions(gh, self.periods.device) + 0.5 + self.grid_offset) / gh  # (gh,) centres in [0, 1]
        t_w = (positions(gw, self.periods.device) + 0.5 + self.grid_offset) / gw
        c_h, c_w = mesh(t_h, t_w)
        coords = torch.stack([c_w, c_h] if self.xy else [c_h, c_w], dim=-1)  # (N, 2)
        coords = 2.0 * coords - 1.0  # [0, 1] -> [-1, 1]
        angles = (2 * math.pi * coords[:, :, None] / self.periods[None, None, :]).flatten(1)  # (N, head_dim / 2)
        return sin_cos_table(angles, self.rotate_half)  # (N, 2 * head_dim)


class MixedRope(nn.Module):
    """timm ``RotaryEmbeddingMixed``: ``forward(gh, gw) -> (depth, heads, gh*gw, 2 * head_dim)``; block i reads [i]."""

    xy: torch.jit.Final[bool]

    def __init__(self, dim: int, depth: int, num_heads: int, temperature: float = 10.0,
                 grid_indexing: str = "xy") -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.xy = grid_indexing == "xy"
        self.freqs = nn.Parameter(_init_mixed_freqs(head_dim, depth, num_heads, temperature))  # (2, depth, h, d/2)

    def forward(self, gh: int, gw: int) -> torch.Tensor:
        c_h, c_w = mesh(positions(gh, self.freqs.device), positions(gw, self.freqs.device))
        t_x, t_y = (c_w, c_h) if self.xy else (c_h, c_w)  # timm: channel 0 of the (maybe swapped) grid is "x"
        freqs = self.freqs.float()
        combined = t_x[:, None] * freqs[0][:, :, None, :] + t_y[:, None] * freqs[1][:, :, None, :]  # (depth, h, N, d/2)
        return sin_cos_table(combined, False).to(self.freqs.dtype)  # (depth, h, N, 2d)


def _init_mixed_freqs(head_dim: int, depth: int, num_heads: int, temperature: float) -> torch.Tensor:
    """timm ``init_random_2d_freqs``: per block and head, the axial magnitudes rotated by a random angle."""
    mag = 1.0 / (temperature ** (torch.arange(0, head_dim, 4, dtype=torch.float32) / head_dim))[None, None]
    angles = torch.rand(depth, num_heads, 1) * 2 * math.pi
    fx = torch.cat([mag * torch.cos(angles), mag * torch.cos(angles + math.pi / 2)], dim=-1)
    fy = torch.cat([mag * torch.sin(angles), mag * torch.sin(angles + math.pi / 2)], dim=-1)
    return torch.stack([fx, fy], dim=0)  # (2, depth, num_heads, head_dim // 2)


def make_rope(
    rope_type: str,
    dim: int,
    num_heads: int,
    depth: int,
    temperature: float,
    grid_offset: float,
    grid_indexing: str,
    ref_feat_shape: Optional[List[int]],
    rotate_half: bool,
) -> nn.Module:
    """The RoPE module timm's Eva builds for ``rope_type`` (``cat``, ``dinov3``, ``mixed``); dim is the model's."""
    head_dim = dim // num_heads
    if rope_type == "cat":
        ref = (int(ref_feat_shape[0]), int(ref_feat_shape[1])) if ref_feat_shape is not None else None
        return AxialRope(head_dim, temperature, grid_offset, grid_indexing, ref, rotate_half)
    if rope_type == "dinov3":  # timm drops ref_feat_shape here
        return DinoV3Rope(head_dim, temperature, grid_offset, grid_indexing, rotate_half)
    if rope_type == "mixed":  # timm drops ref_feat_shape and grid_offset here
        return MixedRope(dim, depth, num_heads, temperature, grid_indexing)
    raise ValueError(f"unknown rope_type {rope_type!r}; expected cat, dinov3 or mixed")


__all__ = ["AxialRope", "DinoV3Rope", "MixedRope", "apply_rope", "make_rope", "mesh", "rope_layout"]
