"""`vitexport.verify.parity`: the comparison is data (the caller decides), NaN/Inf never pass, the tolerance is
|out - ref| <= atol + rtol * |ref| exactly, and the tolerance per dtype comes from one table."""

from __future__ import annotations

import numpy as np
import pytest

from vitexport._util.errors import VerificationError
from vitexport.verify.parity import TOLERANCES, compare, tolerance_for


def test_compare_is_data_and_nan_fails() -> None:
    ref = np.array([[1.0, 2.0, -3.0]])
    ok = compare(ref + 1e-6, ref, 1e-5, 1e-4, top1=True)
    assert ok.within_tolerance and ok.top1_agreement == 1.0 and ok.max_abs == pytest.approx(1e-6)
    bad = compare(np.array([[1.0, np.nan, 0.0]]), ref, 1e-5, 1e-4, top1=True)
    assert bad.nonfinite and not bad.within_tolerance
    inf = compare(ref, np.array([[1.0, np.inf, 0.0]]), 1e9, 1e9, top1=False)  # an infinite reference fails too
    assert inf.nonfinite and not inf.within_tolerance


@pytest.mark.parametrize("atol, rtol", [(1e-3, 0.0), (0.0, 1e-2), (2e-5, 1e-4)])
def test_the_tolerance_is_atol_plus_rtol_times_the_reference(atol: float, rtol: float) -> None:
    ref = np.array([[0.5, -4.0, 10.0]], np.float32)
    bound = atol + rtol * np.abs(ref.astype(np.float64))
    for scale, passes in ((0.99, True), (1.01, False)):  # just inside, just outside, at the largest element
        out = ref.astype(np.float64) + scale * bound
        assert compare(out, ref, atol, rtol, top1=False).within_tolerance is passes


def test_top1_cosine_and_shapes() -> None:
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    swapped = np.array([[0.9, 0.1, 0.0], [0.8, 0.1, 0.1]])
    comp = compare(swapped, ref, 1.0, 0.0, top1=True)
    assert comp.top1_agreement == 0.5 and comp.within_tolerance  # within a loose tolerance, yet top-1 moved
    assert comp.cosine == pytest.approx(float(ref[0] @ swapped[0] / np.linalg.norm(ref[0]) ** 2))
    assert compare(swapped, ref, 1.0, 0.0, top1=False).top1_agreement is None
    with pytest.raises(VerificationError, match=r"output shape \(2, 2\) differs"):
        compare(np.zeros((2, 2)), ref, 1.0, 0.0, top1=True)


def test_tolerances_per_dtype_are_one_table() -> None:
    from vitexport.export.defaults import TOLERANCES as EXPORT_TOLERANCES

    assert TOLERANCES is EXPORT_TOLERANCES  # what verify holds an export to is what the export options say
    assert tolerance_for("float16") == TOLERANCES["float16"] and tolerance_for("int8-dynamic") == (0.1, 5e-2)
    assert tolerance_for("bfloat7") == TOLERANCES["float32"]  # unknown dtypes: the strictest
    assert TOLERANCES["float32"] < TOLERANCES["float16"] < TOLERANCES["int8-dynamic"]


def test_the_headline_relative_error_is_against_the_outputs_scale() -> None:
    """Logits near zero make the element-by-element ratio huge on a good match; the figure verify shows is
    max |d| over max |ref|, which stays at the match's real size."""
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 5, (3, 10))
    ref[0, 3] = 1e-7  # a logit next to zero
    out = ref + rng.uniform(-2e-6, 2e-6, ref.shape)
    comp = compare(out, ref, 2e-5, 1e-4, top1=True)
    assert comp.within_tolerance and comp.cosine > 1 - 1e-10
    assert comp.ref_scale == pytest.approx(np.abs(ref).max())
    assert comp.rel_to_scale == pytest.approx(comp.max_abs / np.abs(ref).max())
    assert comp.rel_to_scale < 1e-6 < 1e-2 < comp.max_rel  # the element-by-element figure alarms; the scale's does not
    assert compare(np.zeros((1, 3)), np.zeros((1, 3)), 1e-5, 0.0, top1=False).rel_to_scale == 0.0
    assert compare(np.ones((1, 3)), np.zeros((1, 3)), 1e-5, 0.0, top1=False).rel_to_scale == np.inf
