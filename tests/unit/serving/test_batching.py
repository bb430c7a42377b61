"""Batching by size, one function for the Predictor and the HTTP service: groups of one shape, first-seen order,
chunks within the batch limit (a number, or the Predictor's memory-aware limit per size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vitexport.serving.batching import size_chunks
from vitexport.serving.predictor import Predictor

SHAPES = [(2, 3), (4, 4), (2, 3), (2, 3), (4, 4), (2, 3), (1, 9)]


def inputs() -> list[np.ndarray]:
    return [np.full((1, h, w), i, np.float32) for i, (h, w) in enumerate(SHAPES)]


def test_chunks_hold_one_shape_in_first_seen_order_within_the_limit() -> None:
    xs = inputs()
    chunks = size_chunks(xs, max_batch=2)
    assert [idx for idx, _ in chunks] == [[0, 2], [3, 5], [1, 4], [6]]
    for idx, stack in chunks:
        np.testing.assert_array_equal(stack, np.stack([xs[i] for i in idx]))
    assert sorted(i for idx, _ in chunks for i in idx) == list(range(len(xs)))  # every input once
    assert [idx for idx, _ in size_chunks(xs, max_batch=16)] == [[0, 2, 3, 5], [1, 4], [6]]
    assert size_chunks([], max_batch=4) == []


def test_the_limit_may_depend_on_the_shape() -> None:
    asked: list[tuple[int, ...]] = []

    def limit(shape: tuple[int, ...]) -> int:
        asked.append(shape)
        return 1 if shape == (1, 2, 3) else 3

    chunks = size_chunks(inputs(), limit)
    assert [idx for idx, _ in chunks] == [[0], [2], [3], [5], [1, 4], [6]]
    assert asked == [(1, 2, 3), (1, 4, 4), (1, 1, 9)]  # once per shape
    with pytest.raises(ValueError, match="at least 1"):
        size_chunks(inputs(), lambda shape: 0)


def test_the_predictor_runs_the_chunks_its_memory_limit_allows(sample_onnx: Path) -> None:
    """run_prepared splits each size by `batch_limit` (smaller under a tight memory limit), results in order."""
    roomy = Predictor(str(sample_onnx), provider="cpu", max_batch=4)
    tight = Predictor(str(sample_onnx), provider="cpu", max_batch=4, max_memory_gb=1.5e-3)  # 2 of 60x60
    big, small = (1, 60, 60), (1, 17, 45)
    assert roomy.batch_limit(big) == 4 and tight.batch_limit(big) < tight.batch_limit(small) <= 4
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal(big if i % 3 else small).astype(np.float32) for i in range(9)]
    runs: list[int] = []
    run = tight.engine.run
    tight.engine.run = lambda x: runs.append(len(x)) or run(x)  # the engine sees each chunk once
    got, want = tight.run_prepared(xs), roomy.run_prepared(xs)
    expected = [len(idx) for idx, _ in size_chunks(xs, tight.batch_limit)]
    assert runs == expected and max(runs) <= 4 and len(runs) > 3
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
