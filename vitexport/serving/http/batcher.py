"""Batches formed when the engine is free: the chunks of concurrent requests queue here, and one worker takes
every queued chunk it can each time it starts an engine batch (the rule of Triton's dynamic batcher).

A batch takes the queued chunks oldest first while no image size passes ``max_batch`` images (a chunk that would
pass it stays queued, first in line for the next batch). It waits for more only while no size is full and its
oldest chunk has waited less than ``wait_s``; chunks that queued while the engine ran have waited long enough, so
under load a batch starts as soon as the engine is free, with everything that arrived meanwhile.

Ray Serve's ``@serve.batch`` forms each batch within ``wait_s`` of its first request even while the previous batch
runs, and queues it: concurrent requests then run as many small batches, each image size of a batch costing one
engine run.

No Ray: the deployment (`vitexport.serving.http.app`) makes one batcher per replica; tests drive it in-process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitexport.serving.http.service import largest_size_group

logger = logging.getLogger(__name__)


@dataclass
class _Waiting:
    stack: np.ndarray  # (n, C, H, W): one image size
    future: asyncio.Future
    since: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.stack.shape[1:])


class SizeBatcher:
    """``run(stacks) -> results`` (one result or exception per stack, `ModelService.run_chunks`) on batches of the
    chunks that `submit` queues; one batch at a time, in a worker thread, so the event loop keeps reading requests."""

    def __init__(self, run: Callable[[list[np.ndarray]], list[Any]], max_batch: int, wait_s: float) -> None:
        if max_batch < 1 or wait_s < 0:
            raise ValueError("max_batch must be positive and wait_s not negative")
        self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
        self._queue: deque[_Waiting] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, stack: np.ndarray) -> Any:
        """The result of ``stack`` (a chunk of one image size), or the exception `run` gave it."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._work())
        waiting = _Waiting(stack, loop.create_future())
        self._queue.append(waiting)
        self._arrived.set()
        return await waiting.future

    def _full(self) -> bool:
        """Whether the queued chunks fill one image size (an engine run of ``max_batch`` images)."""
        return largest_size_group([item.stack for item in self._queue]) >= self.max_batch

    def _take(self) -> list[_Waiting]:
        """The next batch: queued chunks oldest first while each image size stays within ``max_batch`` images."""
        batch, counts, kept = [], {}, deque()
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():  # its request was cancelled
                continue
            if counts.get(item.size, 0) + len(item.stack) > self.max_batch:
                kept.append(item)
                continue
            counts[item.size] = counts.get(item.size, 0) + len(item.stack)
            batch.append(item)
        self._queue = kept
        return batch

    async def _wait_for_batch(self) -> None:
        """Until chunks are queued and either a size is full or the oldest has waited ``wait_s``."""
        assert self._arrived is not None
        while True:
            if self._queue:
                left = self._queue[0].since + self.wait_s - time.monotonic()
                if left <= 0 or self._full():
                    return
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    return
            else:
                self._arrived.clear()
                await self._arrived.wait()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch()
            batch = self._take()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(None, self.run, [item.stack for item in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)} chunks")
            except Exception as exc:  # run itself failed: every request of this batch gets the error
                logger.exception("a batch of %d chunks failed", len(batch))
                results = [exc] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)



def batch_service(service: Any) -> SizeBatcher:
    """Put a `SizeBatcher` in front of a `ModelService`'s engine, as each replica does: concurrent requests (HTTP
    and gRPC) share its engine runs. Returns the batcher."""
    batcher = SizeBatcher(service.run_chunks, service.args.max_batch, service.args.batch_wait_ms / 1000)
    service.runner = batcher.submit
    return batcher


__all__ = ["SizeBatcher", "batch_service"]
