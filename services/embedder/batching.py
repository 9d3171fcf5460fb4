"""A generic async micro-batcher: concurrent callers' items are gathered into one blocking call.

Items are collected until `max_batch` are waiting or `max_wait_s` has passed since the first, then the batch
function runs on a bounded executor (one thread by default) so inference never blocks the event loop. While
a batch runs, new items queue and form the next one, so batches grow with load on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Generic, TypeVar

from services.common.errors import ServiceUnavailable

log = logging.getLogger("facegate.embedder.batching")

T = TypeVar("T")
R = TypeVar("R")

BatchObserver = Callable[[int, float], None]  # (batch size, seconds the batch function took)


class Overloaded(ServiceUnavailable):
    code = "overloaded"


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        name: str,
        max_queue: int = 1024,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self.max_queue = max_queue
        self._own_executor = executor is None
        self._executor = executor or self._new_executor()
        self._observer = observer
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def _new_executor(self) -> Executor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{self.name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(ServiceUnavailable(f"{self.name} batcher closed"))
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
            # A later start() (e.g. a second asyncio.run in a script) gets a fresh thread.
            self._executor = self._new_executor()

    async def submit(self, item: T) -> R:
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        if not items:
            return []
        if not self.running:
            self.start()
        assert self._queue is not None
        if self._queue.qsize() + len(items) > self.max_queue:
            raise Overloaded(f"{self.name} queue is full ({self.max_queue} items); retry later")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            fut: asyncio.Future[R] = loop.create_future()
            self._queue.put_nowait((item, fut))
            futures.append(fut)
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:
                f.cancel()  # a cancelled caller's items are skipped when their batch is formed
            raise

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            # Take what is already queued without waiting (it arrived while the last batch ran).
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [(item, fut) for item, fut in await self._collect() if not fut.done()]
            if not batch:
                continue
            items = [item for item, _ in batch]
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._fn, items)
                if len(results) != len(items):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(ServiceUnavailable(f"{self.name} batcher stopped"))
                raise
            except Exception as exc:
                log.exception("%s batch of %d failed", self.name, len(items))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self._observer is not None:
                self._observer(len(items), time.perf_counter() - start)
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
