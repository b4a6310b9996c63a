"""A generic async micro-batcher: concurrent requests that can share one call run as one batch.

Requests carry a key; only requests with equal keys share a batch. One dispatcher task per event
loop takes the oldest waiting request, waits up to ``wait_s`` (counted from when that request
arrived) for companions with its key, and runs up to ``limit(key)`` of them with one call of
``run_batch`` in a worker thread. Batches run one at a time: the work they stand for (a
diffusion pipeline on one accelerator) is serial anyway, and pipelines are not thread-safe.

Cancellation stops work, not only the wait:

- a request cancelled while it is queued is dropped before any batch takes it;
- once a batch runs, cancelling a request sets nothing visible to the worker until *every*
  request of the batch is cancelled; then the batch's ``Stop`` flag is set, and ``run_batch``
  is expected to check it (a diffusion step callback does) and raise :class:`BatchCancelled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["BatchCancelled", "MicroBatcher", "Stop"]

KeyT = TypeVar("KeyT", bound=Hashable)
RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


class BatchCancelled(Exception):
    """Raised inside ``run_batch`` when every request of its batch was cancelled."""


class Stop:
    """A thread-safe flag a running batch polls: set when nobody waits for its results any more."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask the batch to stop."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether the batch should stop."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`BatchCancelled` if the batch should stop."""
        if self._event.is_set():
            raise BatchCancelled("every request of this batch was cancelled")


@dataclass(eq=False)
class _Pending(Generic[KeyT, RequestT, ResultT]):
    key: KeyT
    request: RequestT
    future: asyncio.Future[ResultT]
    arrived: float
    batch: _Running | None = None


@dataclass(eq=False)
class _Running:
    stop: Stop = field(default_factory=Stop)
    waiting: int = 0


RunBatch = Callable[[KeyT, Sequence[RequestT], Stop], Sequence[ResultT]]


class MicroBatcher(Generic[KeyT, RequestT, ResultT]):
    """Group concurrent requests with equal keys into calls of ``run_batch``.

    Args:
        run_batch: Called in a worker thread with a key, 1 to ``limit(key)`` requests and a
            :class:`Stop`; returns one result per request, in order. It should poll the stop
            flag between units of work and raise :class:`BatchCancelled` when it is set.
        limit: Most requests per batch for a key.
        wait_s: Longest the oldest request waits for companions before its batch starts.

    """

    def __init__(
        self,
        run_batch: RunBatch[KeyT, RequestT, ResultT],
        *,
        limit: Callable[[KeyT], int],
        wait_s: float,
    ) -> None:
        self._run_batch = run_batch
        self._limit = limit
        self._wait_s = wait_s
        self._queue: list[_Pending[KeyT, RequestT, ResultT]] = []
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, key: KeyT, request: RequestT) -> ResultT:
        """Queue ``request`` under ``key`` and wait for its result.

        Raises:
            Exception: Whatever ``run_batch`` raised for the batch this request ran in.

        """
        loop = asyncio.get_running_loop()
        self._ensure_dispatcher(loop)
        assert self._wakeup is not None
        pending: _Pending[KeyT, RequestT, ResultT] = _Pending(key, request, loop.create_future(), time.monotonic())
        self._queue.append(pending)
        self._wakeup.set()
        try:
            # Shielded so that a cancelled caller leaves the future for the dispatcher to settle.
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            self._abandon(pending)
            raise

    def _abandon(self, pending: _Pending[KeyT, RequestT, ResultT]) -> None:
        if pending.future.done() and not pending.future.cancelled():
            pending.future.exception()  # settled as the caller left: mark it retrieved, nobody will read it
        pending.future.cancel()
        if pending in self._queue:
            self._queue.remove(pending)
        elif pending.batch is not None:
            pending.batch.waiting -= 1
            if pending.batch.waiting <= 0:
                pending.batch.stop.set()
        if self._wakeup is not None:
            self._wakeup.set()

    def _ensure_dispatcher(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._dispatcher is not None and not self._dispatcher.done():
            return
        if self._loop is not loop:
            # A new event loop (e.g. one per test): requests of a closed loop cannot be answered.
            self._queue.clear()
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._dispatcher = loop.create_task(self._dispatch(), name="micro-batcher")

    async def aclose(self) -> None:
        """Stop the dispatcher; queued requests are cancelled, a running batch is asked to stop."""
        for pending in self._queue:
            pending.future.cancel()
        self._queue.clear()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None

    async def _dispatch(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            head = self._queue[0]
            limit = max(1, self._limit(head.key))
            deadline = head.arrived + self._wait_s
            while head in self._queue and self._count(head.key) < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), remaining)
            if head not in self._queue:
                continue  # the head was cancelled while waiting: start over with the next one
            batch = [p for p in self._queue if p.key == head.key][:limit]
            for pending in batch:
                self._queue.remove(pending)
            await self._run(head.key, batch)

    def _count(self, key: KeyT) -> int:
        return sum(1 for p in self._queue if p.key == key)

    async def _run(self, key: KeyT, batch: list[_Pending[KeyT, RequestT, ResultT]]) -> None:
        running = _Running(waiting=len(batch))
        for pending in batch:
            pending.batch = running
        requests = [p.request for p in batch]
        worker = asyncio.ensure_future(asyncio.to_thread(self._run_batch, key, requests, running.stop))
        try:
            # Shielded: if the dispatcher itself is cancelled (aclose), the worker is told to stop
            # and awaited, so no pipeline call outlives its batcher.
            results = await asyncio.shield(worker)
        except asyncio.CancelledError:
            running.stop.set()
            with contextlib.suppress(BaseException):
                await worker
            raise
        except BatchCancelled:
            return
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        if len(results) != len(batch):
            error = RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
