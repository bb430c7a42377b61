"""`SizeBatcher`: batches formed when the engine is free, with everything queued meanwhile (each image size up to
max_batch images), results and errors per chunk. A fake engine records each batch; no model, no Ray."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from vitexport.serving.http.batcher import SizeBatcher


def chunk(n: int, h: int, w: int = 8, value: float = 0.0) -> np.ndarray:
    return np.full((n, 1, h, w), value, np.float32)


class Engine:
    """run(stacks) -> per stack its values summed per image; blocks while ``hold`` is clear; records batches."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()

    def run(self, stacks: list[np.ndarray]) -> list:
        self.batches.append([s.shape for s in stacks])
        self.started.set()
        self.hold.wait(30)
        return [ValueError("refused") if s.flat[0] < 0 else s.reshape(len(s), -1).sum(1) for s in stacks]


def test_chunks_that_queue_while_the_engine_runs_form_one_batch() -> None:
    """Ray Serve's @serve.batch would have formed them into batches of what arrived within wait_s of each other."""
    engine = Engine()

    async def scenario() -> list:
        batcher = SizeBatcher(engine.run, max_batch=4, wait_s=0.001)
        engine.hold.clear()
        first = asyncio.ensure_future(batcher.submit(chunk(1, 10)))
        await asyncio.to_thread(engine.started.wait, 30)  # the engine is busy with the first chunk
        later = []
        for i, h in enumerate([10, 12, 10, 14, 10, 10, 12, 10]):  # spread out: each alone past wait_s
            later.append(asyncio.ensure_future(batcher.submit(chunk(1, h, value=i + 1))))
            await asyncio.sleep(0.01)
        engine.hold.set()
        return await asyncio.wait_for(asyncio.gather(first, *later), 30)

    results = asyncio.run(scenario())
    assert [r.tolist() for r in results] == [[0.0]] + [[8.0 * h * (i + 1)] for i, h in
                                                        enumerate([10, 12, 10, 14, 10, 10, 12, 10])]
    sizes = [[shape[2] for shape in batch] for batch in engine.batches]
    # the first chunk alone; then everything queued meanwhile, size 10 up to 4 images; the fifth 10 waits its turn
    assert sizes == [[10], [10, 12, 10, 14, 10, 10, 12], [10]], sizes


def test_a_lone_chunk_waits_at_most_wait_s_and_a_full_size_does_not_wait() -> None:
    engine = Engine()

    async def scenario() -> tuple[float, float]:
        batcher = SizeBatcher(engine.run, max_batch=4, wait_s=0.3)
        start = time.monotonic()
        await batcher.submit(chunk(1, 10))
        alone = time.monotonic() - start
        slow = SizeBatcher(engine.run, max_batch=4, wait_s=30)
        start = time.monotonic()
        await asyncio.wait_for(asyncio.gather(slow.submit(chunk(3, 10)), slow.submit(chunk(1, 10))), 10)
        return alone, time.monotonic() - start

    alone, full = asyncio.run(scenario())
    assert 0.25 <= alone < 5, alone
    assert full < 5, full  # 4 images of one size: no waiting for the 30 s
    assert [[s[0] for s in b] for b in engine.batches] == [[1], [3, 1]]


def test_errors_stay_with_their_chunk_and_a_failed_run_fails_only_its_batch() -> None:
    calls = []

    def run(stacks):
        calls.append(len(stacks))
        if len(calls) == 1:
            raise RuntimeError("engine exploded")
        return [ValueError("refused") if s.flat[0] < 0 else s.reshape(len(s), -1).sum(1) for s in stacks]

    async def scenario() -> list:
        batcher = SizeBatcher(run, max_batch=8, wait_s=0.05)
        first = await asyncio.gather(batcher.submit(chunk(1, 10)), return_exceptions=True)
        second = await asyncio.gather(batcher.submit(chunk(1, 10, value=-1)), batcher.submit(chunk(2, 10, value=1)),
                                      return_exceptions=True)
        return [*first, *second]

    exploded, refused, fine = asyncio.run(scenario())
    assert isinstance(exploded, RuntimeError) and "exploded" in str(exploded)
    assert isinstance(refused, ValueError) and fine.tolist() == [80.0, 80.0]
    assert calls == [1, 2]


def test_a_cancelled_request_is_not_run() -> None:
    engine = Engine()

    async def scenario() -> None:
        batcher = SizeBatcher(engine.run, max_batch=4, wait_s=0.2)
        gone = asyncio.ensure_future(batcher.submit(chunk(1, 10)))
        kept = asyncio.ensure_future(batcher.submit(chunk(1, 12)))
        await asyncio.sleep(0.01)
        gone.cancel()
        assert (await asyncio.wait_for(kept, 10)).tolist() == [0.0]

    asyncio.run(scenario())
    assert engine.batches == [[(1, 1, 12, 8)]]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        SizeBatcher(lambda s: s, max_batch=0, wait_s=0)
    with pytest.raises(ValueError):
        SizeBatcher(lambda s: s, max_batch=1, wait_s=-1)
