"""What verify runs: the cases of a sweep (sizes x batches, derived from the model), their inputs, the reduced
sweep for slow engines, the heatmap's grid, and the cases kept within the work limits.

Light: numpy only inside `make_input`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vitexport._util.errors import LimitError
from vitexport._util.geometry import padded_size, token_count
from vitexport.security.limits import Limits, estimate
from vitexport.security.limits import check as check_limits
from vitexport.verify.defaults import DEFAULT_BATCH_SIZES

if TYPE_CHECKING:
    from vitexport.model.config import ViTConfig


@dataclass(frozen=True)
class Case:
    height: int
    width: int
    batch: int
    input_kind: str = "random"  # "random" (normal, fixed seed) or "constant"


def default_sizes(config: ViTConfig) -> list[tuple[int, int]]:
    """Sizes derived from the model: native, (not) divisible, non-square, < one patch, grids down and up to 4x.

    Args:
        config: the model's config (native size and patch).
    """
    (h, w), (ph, pw) = config.img_hw, config.patch_hw
    gh, gw = config.grid_size
    sizes = [
        (h, w),  # native
        (gh * ph, gw * pw),  # the native grid itself: resampling is the identity
        (ph * max(1, gh // 2), pw * (gw + 1)),  # divisible, non-square: fewer rows, more columns
        (h + 1, w + max(1, pw // 2) + 1),  # not divisible either way
        (h, w + 3),  # divisible one way (when native is), not the other
        (2 * h + 3, max(1, w // 2) + 1),  # tall
        (max(1, h // 2) + 3, 2 * w - 1),  # wide
        (1, 1),
        (max(1, ph - 1), max(1, pw - 1)),  # smaller than one patch
        (max(1, ph - 1), 2 * pw + 1),
        (ph * max(1, gh // 2), pw * max(1, gw // 2)),  # grid smaller than native: downsampled embeddings
        (2 * h, 2 * w),  # grid larger: upsampled
        (h, 4 * w),  # up to 4x native
        (4 * h, max(1, w // 2)),
    ]
    return list(dict.fromkeys(sizes))


def accepted_sizes(config: ViTConfig, sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sizes a model accepts: only its own without dynamic_img_size; patch multiples without padding."""
    if not config.dynamic_img_size:
        return [config.img_hw]
    if config.dynamic_img_pad:
        return sizes
    rounded = [padded_size(h, w, config.patch_hw) for h, w in sizes]
    return list(dict.fromkeys(rounded))


def default_cases(config: ViTConfig, batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES) -> list[Case]:
    """The default sweep: `default_sizes` the model accepts at every batch size (the largest size at batch 1
    only), plus a constant image at the native size and at an odd one.

    Args:
        config: the model's config.
        batch_sizes: the batch sizes of every size.
    """
    sizes = accepted_sizes(config, default_sizes(config))
    largest = max(sizes, key=lambda s: s[0] * s[1])
    cases = []
    for h, w in sizes:
        for b in batch_sizes:
            if (h, w) == largest and b > 1:
                continue  # the 4x cases are costly; batch 1 there
            cases.append(Case(h, w, b))
    (nh, nw) = accepted_sizes(config, [config.img_hw])[0]
    cases.append(Case(nh, nw, 1, "constant"))
    other = accepted_sizes(config, [(nh + 1, nw + 3)])[0]
    if other != (nh, nw):
        cases.append(Case(*other, 2, "constant"))
    return cases


def cases_for(sizes: list[tuple[int, int]], batch_sizes: tuple[int, ...]) -> list[Case]:
    return [Case(h, w, b) for h, w in sizes for b in batch_sizes]


def case_list(cfg: ViTConfig, sizes: list[tuple[int, int]] | None, batch_sizes: tuple[int, ...],
              fixed_batch: int | None) -> list[Case]:
    """The cases asked for: the default sweep, or ``sizes`` x ``batch_sizes``; every case at a fixed-batch
    export's batch."""
    cases = default_cases(cfg, batch_sizes) if sizes is None else cases_for(sizes, batch_sizes)
    if fixed_batch:  # a fixed-batch export runs every case at its batch
        cases = list(dict.fromkeys(Case(c.height, c.width, fixed_batch, c.input_kind) for c in cases))
    return cases


def within_limits(cases: list[Case], cfg: ViTConfig, limits: Limits, skip_large: bool,
                  attention: str | None = None) -> tuple[list[Case], list[str]]:
    """The cases to run and those skipped. With ``skip_large`` (the default sweep, the heatmap) sizes over
    the token limit are dropped and listed; everything left must be within both limits, or nothing runs.
    ``attention``: the artifact's attention form (its memory, `vitexport.security.limits.estimate`)."""
    skipped: list[str] = []
    if skip_large and limits.max_tokens is not None:
        kept = []
        for c in cases:
            est = estimate(cfg, c.height, c.width, c.batch)
            if est.tokens > limits.max_tokens:
                skipped.append(f"{c.height}x{c.width} b{c.batch}: {est.tokens:,} tokens, over --max-tokens "
                               f"{limits.max_tokens:,}")
            else:
                kept.append(c)
        if not kept:
            raise LimitError(f"every size of the sweep is over the token limit ({skipped[0]}); raise --max-tokens")
        cases = kept
    check_limits(cfg, [(c.height, c.width, c.batch) for c in cases], limits, "verify", attention)
    return cases, skipped


def make_input(case: Case, channels: int, seed: int) -> Any:
    """The case's (N, C, H, W) float32 input: seeded normal noise, or a constant 0.5 image."""
    import numpy as np

    if case.input_kind == "constant":
        return np.full((case.batch, channels, case.height, case.width), 0.5, dtype=np.float32)
    rng = np.random.default_rng([seed, case.height, case.width, case.batch])
    return rng.standard_normal((case.batch, channels, case.height, case.width)).astype(np.float32)


def reduced_cases(cfg: ViTConfig, cases: list[Case]) -> list[Case]:
    """The cheap part of a sweep, for slow engines: batch-1 random inputs at most 1.5x the native size's
    patches (native, non-square, not divisible, < one patch, grids down and up), and the smallest batched case."""
    native = accepted_sizes(cfg, [cfg.img_hw])[0]
    limit = 1.5 * token_count(*native, cfg.patch_hw, pad=cfg.dynamic_img_pad)

    def tokens(c: Case) -> int:
        return token_count(c.height, c.width, cfg.patch_hw, pad=cfg.dynamic_img_pad)

    small = [c for c in cases if c.input_kind == "random" and tokens(c) <= limit]
    single = min((c.batch for c in small), default=1)
    keep = [c for c in small if c.batch == single]
    batched = [c for c in small if c.batch > single]
    if batched:
        keep.append(min(batched, key=lambda c: (tokens(c) * c.batch, c.height, c.width)))
    return [c for c in cases if c in keep]


def heatmap_sizes(native: tuple[int, int], patch: tuple[int, int], steps: int = 8) -> tuple[list[int], list[int]]:
    """Heights and widths for `vitexport.verify.sweep.heatmap_sweep`: 1 to 4x native, including non-multiples
    of the patch."""

    def axis(n: int, p: int) -> list[int]:
        values = {1, max(1, p - 1), n, n + 1, 4 * n}
        values.update(max(1, round(4 * n * i / (steps - 1))) for i in range(steps))
        return sorted(values)[: steps + 3]

    return axis(native[0], patch[0]), axis(native[1], patch[1])


__all__ = ["Case", "accepted_sizes", "case_list", "cases_for",
           "default_cases", "default_sizes", "heatmap_sizes", "make_input", "reduced_cases", "within_limits"]
