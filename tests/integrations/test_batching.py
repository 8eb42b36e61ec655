"""RequestBatcher: the batching verl's reward manager and the OpenRLHF reward server share."""

import asyncio
import threading

import pytest

from autorule.integrations.batching import RequestBatcher


def test_concurrent_requests_share_one_call_and_get_their_own_results():
    calls = []
    batcher = RequestBatcher(lambda items: calls.append(list(items)) or [x * 2 for x in items], max_wait_ms=20)

    async def run():
        return await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(5)))

    assert asyncio.run(run()) == [[2 * i, 2 * (i + 100)] for i in range(5)]
    assert len(calls) == 1 and sorted(calls[0]) == sorted(x for i in range(5) for x in (i, i + 100))
    assert (batcher.batches, batcher.samples) == (1, 10)


def test_max_batch_bounds_a_batch_but_never_splits_a_request():
    calls = []
    batcher = RequestBatcher(lambda items: calls.append(len(items)) or items, max_wait_ms=20, max_batch=3)

    async def run():
        return await asyncio.gather(batcher.submit([1, 2]), batcher.submit([3, 4]), batcher.submit([5]))

    assert asyncio.run(run()) == [[1, 2], [3, 4], [5]]
    assert calls == [4, 1]  # 2 + 2 passes 3: the second request is whole in the first batch


def test_a_full_queue_refuses_and_a_failed_batch_reaches_every_request():
    release = threading.Event()

    def slow(items):
        release.wait(5)
        if "bad" in items:
            raise RuntimeError("verifier down")
        return items

    batcher = RequestBatcher(slow, max_wait_ms=1, max_queue=1)

    async def run():
        first = asyncio.ensure_future(batcher.submit(["ok"]))
        await asyncio.sleep(0.05)  # the worker holds the first request
        waiting = asyncio.ensure_future(batcher.submit(["bad"]))
        await asyncio.sleep(0)
        with pytest.raises(asyncio.QueueFull):
            await batcher.submit(["third"])
        assert batcher.queued == 1
        release.set()
        assert await first == ["ok"]
        with pytest.raises(RuntimeError, match="verifier down"):
            await waiting

    asyncio.run(run())


def test_a_new_event_loop_gets_new_workers():
    batcher = RequestBatcher(lambda items: [x + 1 for x in items])
    assert asyncio.run(batcher.submit([1])) == [2]
    assert asyncio.run(batcher.submit([2])) == [3]  # the first loop's workers died with it


def test_a_scoring_function_must_answer_every_item():
    batcher = RequestBatcher(lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        asyncio.run(batcher.submit([1, 2]))
