"""Batching by size, in one place: inputs of one shape are stacked into runs of at most a batch limit.

The Predictor runs each chunk through its engine (`Predictor.run_prepared`); the HTTP service hands
each chunk of a request to Ray Serve's batch queue (`vitexport.serving.http.service`). Numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def size_chunks(prepared: Sequence[Any], max_batch: int | Callable[[tuple[int, ...]], int]
                ) -> list[tuple[list[int], np.ndarray]]:
    """(indices, (n, C, H, W) stack) per input shape, in first-seen order, each with n <= the batch limit.

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
        chunks += [(idx[s : s + step], np.stack([prepared[i] for i in idx[s : s + step]]))
                   for s in range(0, len(idx), step)]
    return chunks


__all__ = ["size_chunks"]
