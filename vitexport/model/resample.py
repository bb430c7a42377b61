"""Antialiased bicubic resampling written with elementary ops: the portable ONNX form.

``F.interpolate(mode="bicubic", antialias=True, align_corners=False)`` is separable:
``out = W_h @ grid @ W_w^T``, where each ``W`` (``[n_out, n_in]``) depends only on the two
sizes. This module computes PyTorch's weights (Keys kernel a=-0.5, support and kernel
widened by the scale when shrinking, rows normalised to sum 1) from Range, arithmetic,
Abs, comparisons, Where, ReduceSum and a division, and applies them with MatMul.

Exported from a symbolic output size, the graph computes the weights from the input's
shape at run time: nothing depends on a Python branch on the output size (the
enlarge/shrink choice is a ``torch.where`` on tensors). The input size (the model's
native grid) is a constant. The derivation and the measured numbers are in
docs/portable-resampling.md.

The model uses this form only where asked to, inside ``VisionTransformer.resampling("portable")``
(the ONNX exporter's default); PyTorch eager and TorchScript keep ``F.interpolate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

KEYS_A = -0.5  # the cubic kernel of antialiased bicubic in PyTorch and PIL (plain bicubic uses -0.75)


def _size_tensor(n: Any, dtype: torch.dtype) -> torch.Tensor:
    """A 0-d tensor holding ``n``, an int or (while exporting) a symbolic size."""
    return torch.scalar_tensor(n, dtype=dtype)


def keys_cubic(t: torch.Tensor, a: float = KEYS_A) -> torch.Tensor:
    """Keys' cubic convolution kernel of ``|t|``: 0 from 2 on."""
    t = t.abs()
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0  # |t| < 1
    far = a * (((t - 5.0) * t + 8.0) * t - 4.0)  # 1 <= |t| < 2
    return torch.where(t < 1.0, near, torch.where(t < 2.0, far, torch.zeros_like(t)))


def bicubic_aa_weights(n_out: Any, n_in: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[n_out, n_in]`` weights of antialiased bicubic resampling (align_corners=False).

    For output index i and input index j, as PyTorch's CPU kernel computes them:
    ``scale = n_in / n_out``; when shrinking (scale >= 1) the kernel is stretched by the scale
    (support ``2 * scale``, argument times ``inv = 1 / scale``), otherwise support 2 and inv 1;
    ``center = scale * (i + 0.5)``; ``w = keys((j - center + 0.5) * inv)`` for j in
    ``[max(floor(center - support + 0.5), 0), min(floor(center + support + 0.5), n_in))``; every
    row divided by its sum. That window holds every j with ``|t| < 2`` (``support * inv == 2``) and
    the kernel is 0 from ``|t| = 2`` on, with a zero slope there, so no mask is computed; clamping to
    ``[0, n_in)`` is j's own range. ``n_out`` may be symbolic; ``n_in`` is a constant.

    In float32 (the model's case) the steps follow PyTorch's float32 kernel up to a few roundings
    (measured: <= 7e-7); ``dtype=torch.float64`` is for tests of the formula itself.
    """
    i = torch.arange(n_out).to(dtype)  # (n_out,)  Range on int64 (its limit comes from the input's shape), Cast
    j = torch.arange(n_in, dtype=dtype)[None, :]  # (1, n_in)  constant: a Range runtimes fold at load time
    # tensor / tensor: `float / tensor` would be a reciprocal and a product, two roundings
    scale = torch.div(_size_tensor(n_in, dtype), _size_tensor(n_out, dtype))  # () >= 1 when shrinking
    one = torch.ones_like(scale)
    inv = torch.where(scale >= 1.0, torch.div(one, scale), one)  # a Where on tensors: n_out is symbolic
    center = (scale * (i + 0.5))[:, None]  # (n_out, 1)
    w = keys_cubic((j - center + 0.5) * inv)  # (n_out, n_in)
    return w / w.sum(dim=1, keepdim=True)


def resample_bicubic_aa(grid: torch.Tensor, new_size: Sequence[Any]) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, new_h, new_w)``: ``W_h @ (grid @ W_w^T)``, in the grid's dtype.

    Equals ``F.interpolate(grid, new_size, mode="bicubic", antialias=True, align_corners=False)``
    within float32 rounding. The constant ``grid`` is the left operand of the first MatMul and
    the other operands are computed, so no MatMul here has a constant right operand (int8
    quantizers quantize exactly those: the embeddings stay float).
    """
    w_h = bicubic_aa_weights(new_size[0], grid.shape[-2], grid.dtype)  # (new_h, H)
    w_w = bicubic_aa_weights(new_size[1], grid.shape[-1], grid.dtype)  # (new_w, W)
    return torch.matmul(w_h, torch.matmul(grid, w_w.transpose(0, 1)))  # (N, C, new_h, new_w)


__all__ = [
    "bicubic_aa_weights",
    "keys_cubic",
    "resample_bicubic_aa",
]
