"""Position-table resampling of the other ViT classes (NaFlexViT's tables), eager and portable.

A model resamples in the portable form (elementary ops and MatMul instead of one ONNX Resize; see
`vitexport.model.resample`) inside ``model.resampling("portable")``, as the ONNX exporter traces it.
`resample_2d` / `resample_1d` resample a ``(N, C, H, W)`` / ``(N, C, L)`` table as ``F.interpolate`` does,
in that form when asked:

- bicubic, antialiased, ``align_corners=False``: `vitexport.model.resample.resample_bicubic_aa`;
- linear (bilinear per axis, NaFlexViT's SigLIP and RADIO tables), with or without antialias,
  ``align_corners`` either way: `linear_weights`, PyTorch's CPU weights computed from the sizes.

PyTorch eager and TorchScript always use ``F.interpolate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vitexport.model.resample import resample_bicubic_aa


def _scale(n_out: Any, n_in: int, align_corners: bool, dtype: torch.dtype) -> torch.Tensor:
    """PyTorch's ``area_pixel_compute_scale``: ``(n_in-1)/(n_out-1)`` (0 for one output) or ``n_in/n_out``."""
    out = torch.scalar_tensor(n_out, dtype=dtype)
    if not align_corners:
        return torch.div(torch.scalar_tensor(n_in, dtype=dtype), out)
    one = torch.ones_like(out)
    ratio = torch.div(torch.scalar_tensor(n_in - 1, dtype=dtype), torch.maximum(out - 1.0, one))
    return torch.where(out > 1.0, ratio, torch.zeros_like(out))


def linear_weights(n_out: Any, n_in: int, antialias: bool, align_corners: bool,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[n_out, n_in]`` weights of PyTorch's (bi)linear interpolation along one axis (CPU kernel).

    Without antialias: source ``s = scale * i`` (align_corners) or ``max(scale * (i + 0.5) - 0.5, 0)``,
    ``i0 = min(floor(s), n_in - 1)``, ``lambda = clamp(s - i0, 0, 1)``, weights ``1 - lambda`` at ``i0`` and
    ``lambda`` at ``min(i0 + 1, n_in - 1)``. With antialias (the separable AA kernel): centre
    ``scale * (i + 0.5)``, triangle ``max(0, 1 - |(j - centre + 0.5) * inv|)`` with ``inv = 1 / scale`` when
    shrinking, rows normalised (PyTorch's window holds exactly the j where the triangle is not 0).
    ``n_out`` may be symbolic (read from the input's shape); ``n_in`` is the table's, a constant.
    """
    i = torch.arange(n_out).to(dtype)  # (n_out,)
    j = torch.arange(n_in, dtype=dtype)[None, :]  # (1, n_in)
    scale = _scale(n_out, n_in, align_corners, dtype)
    if antialias:
        one = torch.ones_like(scale)
        inv = torch.where(scale >= 1.0, torch.div(one, scale), one)
        center = (scale * (i + 0.5))[:, None]
        w = torch.clamp(1.0 - ((j - center + 0.5) * inv).abs(), min=0.0)  # (n_out, n_in)
        return w / w.sum(dim=1, keepdim=True)
    src = scale * i if align_corners else torch.clamp(scale * (i + 0.5) - 0.5, min=0.0)
    i0 = torch.clamp(torch.floor(src), max=float(n_in - 1))
    lam = torch.clamp(src - i0, 0.0, 1.0)[:, None]
    i1 = torch.clamp(i0 + 1.0, max=float(n_in - 1))
    return (j == i0[:, None]).to(dtype) * (1.0 - lam) + (j == i1[:, None]).to(dtype) * lam


def resample_2d(grid: torch.Tensor, size: Sequence[Any], mode: str, antialias: bool, align_corners: bool,
                portable_form: bool) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, size[0], size[1])`` as ``F.interpolate(grid, size, mode, ...)``."""
    if not portable_form:
        return F.interpolate(grid, size=[size[0], size[1]], mode=mode, antialias=antialias,
                             align_corners=align_corners)
    if mode == "bicubic":
        if align_corners or not antialias:
            raise ValueError("the portable bicubic form is antialiased with align_corners=False only")
        return resample_bicubic_aa(grid, size)
    w_h = linear_weights(size[0], grid.shape[-2], antialias, align_corners, grid.dtype)
    w_w = linear_weights(size[1], grid.shape[-1], antialias, align_corners, grid.dtype)
    return torch.matmul(w_h, torch.matmul(grid, w_w.transpose(0, 1)))


def resample_1d(table: torch.Tensor, length: Any, portable_form: bool) -> torch.Tensor:
    """``(N, C, L)`` -> ``(N, C, length)``: ``F.interpolate(mode='linear', align_corners=False)`` (NaFlexViT's
    factorized tables)."""
    if not portable_form:
        return F.interpolate(table, size=length, mode="linear", align_corners=False)
    w = linear_weights(length, table.shape[-1], antialias=False, align_corners=False, dtype=table.dtype)
    return torch.matmul(table, w.transpose(0, 1))


__all__ = ["linear_weights", "resample_1d", "resample_2d"]
