"""Requests from many callers scored in one verifier pass: the batching the reward adapters share.

verl's reward loop calls its manager once per sample, all at once; OpenRLHF's workers post
one sample per request, many at a time. Scored one by one, a local verifier runs batches of
one and a server sees a trickle; `RequestBatcher` gathers what arrives within a short wait
into one call of the scoring function, run in a thread so the event loop keeps taking requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job(Generic[T]):
    items: list[T]
    future: asyncio.Future


class RequestBatcher(Generic[T, R]):
    """Gathers the items of concurrent requests into batches for one scoring function.

    A worker takes the first waiting request, waits up to `max_wait_ms` for more (until the
    batch holds `max_batch` items), scores them with one call of `score` in a thread, and
    hands each request its own results. A request's items are never split between batches.
    The workers start on the first `submit` in a running event loop (again in a new loop).

    Args:
        score: scores a batch: items in, one result per item out, in order. An exception
            reaches every request of the batch; the worker lives on.
        max_wait_ms: how long the first waiting request waits for others to join its batch.
        max_batch: the most items in one batch (None: no limit).
        max_queue: waiting requests past which `submit` raises `asyncio.QueueFull` (0: no limit).
        workers: batches scored at once (1: batches grow with the load instead).

    Example:
        >>> calls = []
        >>> batcher = RequestBatcher(lambda items: calls.append(len(items)) or [x * 10 for x in items], max_wait_ms=5)
        >>> async def three_callers():
        ...     return await asyncio.gather(batcher.submit([1]), batcher.submit([2, 3]), batcher.submit([4]))
        >>> asyncio.run(three_callers()), calls, batcher.batches, batcher.samples
        ([[10], [20, 30], [40]], [4], 1, 4)
    """

    def __init__(self, score: Callable[[list[T]], Sequence[R]], *, max_wait_ms: float = 5.0, max_batch: int | None = None,
                 max_queue: int = 0, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers={workers}: at least one worker scores the batches")
        self.score, self.max_wait, self.max_batch, self.max_queue, self.workers = score, max_wait_ms / 1000, max_batch, max_queue, workers
        self.batches = 0  # batches scored
        self.samples = 0  # items scored
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def queued(self) -> int:
        """Requests waiting for a worker."""
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the workers in the running event loop (nothing when they already run there)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and any(not t.done() for t in self._tasks):
            return
        self._loop, self._queue = loop, asyncio.Queue(maxsize=self.max_queue)
        self._tasks = [loop.create_task(self._work()) for _ in range(self.workers)]

    def stop(self) -> None:
        """Cancel the workers (a server shutting down); requests still waiting are not answered."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def submit(self, items: list[T]) -> list[R]:
        """The results for `items`, scored in a batch with other requests' items.

        Args:
            items: one request's items (scored together, in order).

        Raises:
            asyncio.QueueFull: `max_queue` requests are already waiting.
            Exception: whatever `score` raised for the batch.
        """
        self.start()
        assert self._queue is not None
        job = _Job(list(items), asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            jobs = [await queue.get()]
            deadline = time.monotonic() + self.max_wait
            size = len(jobs[0].items)
            while self.max_batch is None or size < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.items)
            items = [x for j in jobs for x in j.items]
            try:
                results = list(await asyncio.to_thread(self.score, items))
                if len(results) != len(items):
                    raise RuntimeError(f"the scoring function returned {len(results)} results for {len(items)} items")
            except Exception as e:  # every waiting request learns of it; the worker lives on
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.batches += 1
            self.samples += len(items)
            start = 0
            for j in jobs:
                n = len(j.items)
                if not j.future.done():  # a caller that gave up (a dropped connection) is skipped
                    j.future.set_result(results[start : start + n])
                start += n
