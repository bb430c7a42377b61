"""`vitexport.verify.cases`: the default sweep covers the sizes the issue names, a fixed-batch export runs its
batch, sizes over the limits are skipped or refused before anything runs, and inputs are seeded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.models import CONFIGS
from vitexport._util.errors import LimitError
from vitexport._util.geometry import grid_size
from vitexport.model.config import ViTConfig
from vitexport.security.limits import Limits, estimate
from vitexport.verify.cases import (
    Case,
    case_list,
    default_cases,
    make_input,
    within_limits,
)
from vitexport.verify.defaults import DEFAULT_BATCH_SIZES


def test_default_sweep_covers_the_issue_cases() -> None:
    cfg = ViTConfig(**CONFIGS["spec_cls"])
    cases = default_cases(cfg)
    sizes = {(c.height, c.width) for c in cases}
    assert len(cases) >= 12
    assert (28, 28) in sizes and (1, 1) in sizes and (7, 7) in sizes
    assert any(h % 8 == 0 and w % 8 == 0 and h != w for h, w in sizes)
    assert any(h % 8 and w % 8 for h, w in sizes)
    assert any(h > 2 * w for h, w in sizes) and any(w > 2 * h for h, w in sizes)
    grids = [grid_size(h, w, (8, 8)) for h, w in sizes]
    assert any(gh * gw < 9 for gh, gw in grids) and any(gh * gw > 9 for gh, gw in grids)
    assert max(max(h / 28, w / 28) for h, w in sizes) == 4
    assert {c.batch for c in cases} == {*DEFAULT_BATCH_SIZES, 2} and any(c.input_kind == "constant" for c in cases)


def test_case_list_runs_a_fixed_batch_export_at_its_batch() -> None:
    cfg = ViTConfig(**CONFIGS["spec_cls"])
    asked = case_list(cfg, [(28, 28), (17, 45)], (1, 3), None)
    assert asked == [Case(28, 28, 1), Case(28, 28, 3), Case(17, 45, 1), Case(17, 45, 3)]
    assert case_list(cfg, [(28, 28), (17, 45)], (1, 3), 4) == [Case(28, 28, 4), Case(17, 45, 4)]
    assert {c.batch for c in case_list(cfg, None, (1, 3), 2)} == {2}


def test_sizes_over_the_token_limit_are_skipped_or_refused() -> None:
    cfg = ViTConfig(**CONFIGS["spec_cls"])
    cases = [Case(28, 28, 1), Case(112, 112, 1)]
    limit = Limits(max_tokens=estimate(cfg, 28, 28, 1).tokens, max_memory_gb=None)
    kept, skipped = within_limits(cases, cfg, limit, skip_large=True)
    assert kept == [Case(28, 28, 1)] and len(skipped) == 1 and skipped[0].startswith("112x112 b1: ")
    with pytest.raises(LimitError):  # explicit sizes are refused, not skipped
        within_limits(cases, cfg, limit, skip_large=False)
    with pytest.raises(LimitError):  # nothing left to run
        within_limits([Case(112, 112, 1)], cfg, limit, skip_large=True)


def test_inputs_are_seeded_per_case() -> None:
    case = Case(5, 7, 2)
    a, b = make_input(case, 3, seed=1), make_input(case, 3, seed=1)
    assert a.shape == (2, 3, 5, 7) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, make_input(case, 3, seed=2))
    assert not np.array_equal(a, make_input(Case(5, 7, 2 + 1), 3, seed=1)[:2])
    assert (make_input(Case(5, 7, 1, "constant"), 3, seed=1) == 0.5).all()
