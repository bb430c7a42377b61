"""Batching by size, in one place: inputs of one shape are stacked into runs of at most a batch limit.

The Predictor runs each chunk through its engine (`Predictor.run_prepared`); the HTTP service hands
each chunk of a request to Ray Serve's batch queue (`vitexport.serving.http.service`). Numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np


def size_chunks(prepared: Sequence[Any], max_batch: int | Callable[[tuple[int, ...]], int]
                ) -> list[tuple[list[int], np.ndarray]]:
    """(indices, (n, C, H, W) stack) per input shape, in first-seen order, each with n <= the batch limit: the
    fewest chunks the limit allows, of balanced sizes (17 inputs at a limit of 16 run as 9 + 8, not 16 + 1).

    Args:
        prepared: (C, H, W) float inputs, e.g. from `vitexport.serving.predictor.Predictor.prepare`.
        max_batch: the most inputs per chunk: a number, or a function of the input shape (C, H, W) (the
            Predictor's limit shrinks with the size to stay within its memory limit).
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(prepared):
        groups.setdefault(tuple(x.shape), []).append(i)
    chunks = []
    for shape, idx in groups.items():
        step = max_batch(shape) if callable(max_batch) else max_batch
        if step < 1:
            raise ValueError(f"the batch limit must be at least 1, got {step}")
        parts = -(-len(idx) // step)  # as few runs as the limit allows, of sizes that differ by at most one
        bounds = [-(-len(idx) * k // parts) for k in range(parts + 1)]  # the larger runs first
        chunks += [(idx[a:b], np.stack([prepared[i] for i in idx[a:b]])) for a, b in pairwise(bounds)]
    return chunks


__all__ = ["size_chunks"]
