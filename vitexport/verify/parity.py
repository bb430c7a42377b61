"""Comparing a runtime's output with a reference output: the comparison, and the tolerance per dtype it is
held to (`TOLERANCES`, defined with the other export defaults in `vitexport.export.defaults`).

Numpy only (no torch), so `bench` can check parity on the serving side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vitexport._util.errors import VerificationError
from vitexport.export.defaults import TOLERANCES
from vitexport.export.options import tolerance_for


@dataclass
class Comparison:
    """Differences between two outputs (Polygraphy-style): the caller decides pass or fail."""

    max_abs: float
    mean_abs: float
    max_rel: float  # element by element: max of |d| / max(|ref|, atol) (large where the reference is near 0)
    cosine: float
    top1_agreement: float | None
    nonfinite: bool
    within_tolerance: bool
    ref_scale: float = 0.0  # the output's scale: max |ref|
    rel_to_scale: float = 0.0  # max_abs / ref_scale: the headline relative error (verify's rows)


def compare(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float, top1: bool) -> Comparison:
    """Compare ``out`` with ``ref`` elementwise: |out - ref| <= atol + rtol * |ref|; NaN/Inf never pass.

    The headline relative error is ``rel_to_scale``, max |d| over the output's scale (max |ref|): element by
    element (``max_rel``) it is large wherever the reference is near zero, however good the match.

    Args:
        out: the runtime's output.
        ref: the reference output (same shape, else `VerificationError`).
        atol: absolute tolerance (`tolerance_for` the model's dtype, usually).
        rtol: relative tolerance.
        top1: also measure top-1 agreement along the last axis (classifiers).
    """
    out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
    nonfinite = not (np.isfinite(out64).all() and np.isfinite(ref64).all())
    if out64.shape != ref64.shape:
        raise VerificationError(f"output shape {out64.shape} differs from PyTorch's {ref64.shape}")
    if nonfinite:
        return Comparison(math.inf, math.inf, math.inf, float("nan"), None, True, False, math.inf, math.inf)
    diff = np.abs(out64 - ref64)
    rel = diff / np.maximum(np.abs(ref64), atol)  # relative where the reference is not ~0
    a, b = out64.reshape(len(out64), -1), ref64.reshape(len(ref64), -1)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(1) / np.where(denom > 0, denom, 1), 1.0)
    agreement = float((a.argmax(1) == b.argmax(1)).mean()) if top1 else None
    scale, max_abs = float(np.abs(ref64).max(initial=0.0)), float(diff.max(initial=0.0))
    return Comparison(
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        max_rel=float(rel.max()),
        cosine=float(cos.min()),
        top1_agreement=agreement,
        nonfinite=False,
        within_tolerance=bool((diff <= atol + rtol * np.abs(ref64)).all()),
        ref_scale=scale,
        rel_to_scale=max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf),
    )


__all__ = ["TOLERANCES", "Comparison", "compare", "tolerance_for"]
