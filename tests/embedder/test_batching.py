"""The micro-batcher on its own, with a fake model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.embedder.batching import MicroBatcher


class FakeModel:
    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        time.sleep(self.delay)  # blocking, like inference
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [i * 2 for i in items]


async def test_concurrent_items_share_calls() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.005, name="t")
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
    finally:
        await batcher.close()
    assert results == [i * 2 for i in range(40)]
    assert max(len(b) for b in model.batches) == 8
    assert len(model.batches) <= 8  # 40 items in at most 8 calls, not 40
    assert all(name.startswith("batch-t") for name in model.threads)  # never on the event loop thread


async def test_submit_many_keeps_order_and_splits_at_max_batch() -> None:
    model = FakeModel(delay=0.0)
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.001, name="t2")
    try:
        assert await batcher.submit_many(list(range(10))) == [i * 2 for i in range(10)]
        assert await batcher.submit_many([]) == []
    finally:
        await batcher.close()
    assert all(len(b) <= 4 for b in model.batches)


async def test_errors_reach_every_caller_of_the_batch_and_worker_survives() -> None:
    model = FakeModel(delay=0.01)
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.02, name="t3")
    try:
        res = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in res)
        assert await batcher.submit(3) == 6
    finally:
        await batcher.close()


async def test_event_loop_stays_responsive() -> None:
    """While the model is busy the loop keeps running: the model blocks until a coroutine on the loop releases
    it. Run on the loop's thread, the model would hold the loop and never be released (it gives up after 10 s
    and says so), whatever the machine's speed; no wall-clock bound is involved."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()
    released: list[bool] = []

    def model(items: list[int]) -> list[int]:
        loop.call_soon_threadsafe(started.set)
        released.append(release.wait(timeout=10))
        return [i * 2 for i in items]

    batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.0, name="t4")
    try:
        task = asyncio.create_task(batcher.submit(1))
        await asyncio.wait_for(started.wait(), 30)  # the model is running now
        release.set()  # from the loop, while the model is still inside its call
        assert await task == 2
        assert released == [True], "the model was never released: it held the event loop"
    finally:
        release.set()
        await batcher.close()


async def test_full_queue_is_refused() -> None:
    batcher = MicroBatcher(FakeModel(delay=0.05), max_batch=1, max_wait_s=0.0, name="t5", max_queue=2)
    try:
        with pytest.raises(Exception) as err:
            await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        assert getattr(err.value, "error_code", "") == "overloaded"
    finally:
        await batcher.close()


async def test_restart_after_close() -> None:
    """Scripts that call asyncio.run twice restart the batcher on the new loop."""
    batcher = MicroBatcher(FakeModel(delay=0.0), max_batch=4, max_wait_s=0.0, name="t6")
    assert await batcher.submit(1) == 2
    await batcher.close()
    assert await batcher.submit(2) == 4
    await batcher.close()
