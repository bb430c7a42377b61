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


def test_chunks_are_balanced_within_the_limit() -> None:
    """17 inputs at a limit of 16 run as 9 + 8 (not 16 + 1), 33 at 16 as 11 x 3: the fewest runs, even sizes."""
    xs = [np.zeros((1, 2, 3), np.float32) for _ in range(17)]
    assert [len(idx) for idx, _ in size_chunks(xs, max_batch=16)] == [9, 8]
    assert [len(idx) for idx, _ in size_chunks(xs + xs[:16], max_batch=16)] == [11, 11, 11]
    assert [len(idx) for idx, _ in size_chunks(xs[:16], max_batch=16)] == [16]
    assert [idx for idx, _ in size_chunks(xs[:5], max_batch=2)] == [[0, 1], [2, 3], [4]]  # 3 runs: 2, 2, 1


def test_run_tokens_caps_the_images_in_one_run(sample_onnx: Path) -> None:
    """A CPU run holds at most ``run_tokens`` tokens (images x tokens each): the default caps large images on a CPU,
    0 lifts the cap, and the capped runs give the uncapped results."""
    from vitexport.serving.defaults import CPU_RUN_TOKENS

    capped = Predictor(str(sample_onnx), provider="cpu", max_batch=16, run_tokens=100)
    free = Predictor(str(sample_onnx), provider="cpu", max_batch=16, run_tokens=0)
    default = Predictor(str(sample_onnx), provider="cpu", max_batch=16)
    assert default.run_tokens == CPU_RUN_TOKENS and free.run_tokens == 0
    from vitexport._util.geometry import token_count

    tokens = token_count(28, 28, capped.patch, capped.vit_config.num_prefix_tokens)  # padded to whole patches
    assert capped.batch_limit((1, 28, 28)) == 100 // tokens < 16 and free.batch_limit((1, 28, 28)) == 16
    big = (1, 28 * 8, 28 * 8)  # 784 patches of 8x8: 2 in a default run
    assert default.batch_limit(big) == CPU_RUN_TOKENS // (784 + default.vit_config.num_prefix_tokens) == 2
    assert Predictor(str(sample_onnx), provider="cpu", run_tokens=1).batch_limit((1, 28, 28)) == 1  # never 0
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 28, 28)).astype(np.float32) for _ in range(13)]
    runs: list[int] = []
    run = capped.engine.run
    capped.engine.run = lambda x: runs.append(len(x)) or run(x)
    got, want = capped.run_prepared(xs), free.run_prepared(xs)
    limit = 100 // tokens
    assert max(runs) <= limit and sum(runs) == 13 and len(runs) == -(-13 // limit)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="run_tokens"):
        Predictor(str(sample_onnx), provider="cpu", run_tokens=-1)


@pytest.mark.parametrize(("devices", "on_cpu"), [
    (["CPUExecutionProvider"], True),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], False),
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], False),
    (["OpenVINO CPU"], True),
    (["OpenVINO GPU.0"], False),
    (["reference"], True),
])
def test_the_run_cap_applies_to_cpu_engines_only(devices: list[str], on_cpu: bool) -> None:
    """`Engine.on_cpu` reads what really runs (a CUDA session that fell back to the CPU is on the CPU)."""
    from vitexport.engines.base import Engine

    class Fake(Engine):
        name = "fake"
        available = load = run = None  # never called: only what `devices` names matters

        @property
        def devices(self) -> list[str]:
            return devices

    assert Fake().on_cpu is on_cpu
