"""Comparing a runtime's output with a reference output: the tolerances and the comparison itself.

Numpy only (no torch), so `bench` can check parity on the serving side; `vitexport.verify` re-exports both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vitexport._util.errors import VerificationError

# Defaults from measurements (docs/numerics.md, "Tolerances"): fp32 graphs differ from eager by ~1e-7
# (tiny ViTs) to ~5e-6 (ViT-S/16, 4-block digits model); fp16 graphs by ~1e-3 on logits of scale 1-10.
TOLERANCES = {"float32": (2e-5, 1e-4), "float16": (5e-3, 1e-2), "int8-dynamic": (0.1, 5e-2),
              "int8-static": (0.1, 5e-2)}
# int8-dynamic: measured max |d| 0.007-0.15 on the digits sample's logits (scale ~10), cosine >= 0.9987.


@dataclass
class Comparison:
    """Differences between two outputs (Polygraphy-style): the caller decides pass or fail."""

    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float | None
    nonfinite: bool
    within_tolerance: bool


def compare(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float, top1: bool) -> Comparison:
    """Compare ``out`` with ``ref`` elementwise: |out - ref| <= atol + rtol * |ref|; NaN/Inf never pass."""
    out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
    nonfinite = not (np.isfinite(out64).all() and np.isfinite(ref64).all())
    if out64.shape != ref64.shape:
        raise VerificationError(f"output shape {out64.shape} differs from PyTorch's {ref64.shape}")
    if nonfinite:
        return Comparison(math.inf, math.inf, math.inf, float("nan"), None, True, False)
    diff = np.abs(out64 - ref64)
    rel = diff / np.maximum(np.abs(ref64), atol)  # relative where the reference is not ~0
    a, b = out64.reshape(len(out64), -1), ref64.reshape(len(ref64), -1)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(1) / np.where(denom > 0, denom, 1), 1.0)
    agreement = float((a.argmax(1) == b.argmax(1)).mean()) if top1 else None
    return Comparison(
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        max_rel=float(rel.max()),
        cosine=float(cos.min()),
        top1_agreement=agreement,
        nonfinite=False,
        within_tolerance=bool((diff <= atol + rtol * np.abs(ref64)).all()),
    )


def tolerance_for(dtype: str) -> tuple[float, float]:
    """(atol, rtol) for a model of this vitexport ``dtype`` (float32's for unknown ones)."""
    return TOLERANCES.get(dtype, TOLERANCES["float32"])


__all__ = ["TOLERANCES", "Comparison", "compare", "tolerance_for"]
