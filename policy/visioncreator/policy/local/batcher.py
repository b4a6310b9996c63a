"""A micro-batcher for blocking work: concurrent jobs from worker threads run as one batch.

The local policy generates in worker threads (one per turn in flight). Each thread hands its
job to :meth:`RowBatcher.submit` and blocks. One of the waiting threads is the leader: it waits
for companions until as many rows wait as the largest of the last 8 batches had (the
conversations in flight come back with their next turns; a lone conversation does not wait),
but never longer than ``wait_s`` counted from when the oldest queued job arrived or the last
batch ended, whichever is later (rows that queued during a batch still wait for the companions
that batch releases); it takes jobs in arrival order
up to ``limit`` rows, runs them with one call of ``run_batch``, and hands each job its result;
then the next waiting thread leads. Batches run one at a time (one model).

The same pattern as the image back end's asyncio micro-batcher, on threads: the policy's callers
may live on any event loop (or none), and the work is blocking anyway.

- A job that is cancelled while queued is dropped before a batch takes it.
- A job marked ``solo`` (a streamed turn) runs in a batch of its own.
- If ``run_batch`` raises for a batch of several jobs, each job is run again alone, so an error
  fails only the job that causes it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["JobCancelled", "RowBatcher"]

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


class JobCancelled(Exception):
    """The job was cancelled before a batch took it (only its abandoned thread sees this)."""


@dataclass(eq=False)
class _Slot(Generic[JobT, ResultT]):
    job: JobT
    rows: int
    solo: bool
    arrived: float
    done: bool = False
    result: ResultT | None = None
    error: BaseException | None = None


class RowBatcher(Generic[JobT, ResultT]):
    """Run jobs submitted from concurrent threads in batches of up to ``limit`` rows.

    Args:
        run_batch: Runs 1 or more jobs at once; returns one result per job, in order.
        rows: How many rows a job takes (a job with more than ``limit`` runs alone).
        limit: Most rows per batch; 1 runs every job alone, at once.
        wait_s: Longest a batch waits for companions, from the oldest queued job's arrival or the
            last batch's end, whichever is later (it goes sooner once as many rows wait as the
            largest of the last 8 batches had).
        cancelled: Whether a job's caller is gone (checked while it is queued).
        solo: Whether a job must run alone.

    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[JobT]], Sequence[ResultT]],
        *,
        rows: Callable[[JobT], int],
        limit: int,
        wait_s: float,
        cancelled: Callable[[JobT], bool],
        solo: Callable[[JobT], bool],
    ) -> None:
        self._run_batch = run_batch
        self._rows = rows
        self._limit = max(1, limit)
        self._wait_s = wait_s
        self._cancelled = cancelled
        self._solo = solo
        self._cond = threading.Condition()
        self._queue: list[_Slot[JobT, ResultT]] = []
        self._busy = False
        self._recent: deque[int] = deque(maxlen=8)
        self._free_since = 0.0
        self.batches: list[int] = []
        """Rows of each batch run so far (the last 1,000), for tests and benchmarks."""

    def submit(self, job: JobT) -> ResultT:
        """Queue ``job``, block until a batch has run it, and return its result.

        Raises:
            JobCancelled: The job was cancelled while it was queued.
            Exception: Whatever ``run_batch`` raised when it ran this job alone.

        """
        slot: _Slot[JobT, ResultT] = _Slot(job, max(1, self._rows(job)), self._solo(job), time.monotonic())
        with self._cond:
            self._queue.append(slot)
            self._cond.notify_all()
        while (batch := self._lead_or_wait(slot)) is not None:
            try:
                self._execute(batch)
            except BaseException as exc:  # not an Exception (KeyboardInterrupt...): nobody may wait forever
                for s in batch:
                    if not s.done:
                        self._settle(s, None, exc)
                raise
            finally:
                with self._cond:
                    self._busy = False
                    self._free_since = time.monotonic()
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead_or_wait(self, slot: _Slot[JobT, ResultT]) -> list[_Slot[JobT, ResultT]] | None:
        """Wait until ``slot`` is done (None) or this thread may lead; then gather and take a batch."""
        with self._cond:
            while not slot.done and (self._busy or slot not in self._queue):
                self._cond.wait()
            if slot.done:
                return None
            self._busy = True
            while True:
                self._drop_cancelled()
                if not self._queue:
                    return []
                head = self._queue[0]
                remaining = max(head.arrived, self._free_since) + self._wait_s - time.monotonic()
                if (
                    head.solo
                    or self._queued_rows() >= min(self._limit, max(self._recent, default=self._limit))
                    or remaining <= 0
                ):
                    return self._take()
                self._cond.wait(remaining)

    def _queued_rows(self) -> int:
        return sum(s.rows for s in self._queue if not s.solo)

    def _drop_cancelled(self) -> None:
        for s in [s for s in self._queue if self._cancelled(s.job)]:
            self._queue.remove(s)
            s.error, s.done = JobCancelled("cancelled while queued"), True
        self._cond.notify_all()

    def _take(self) -> list[_Slot[JobT, ResultT]]:
        batch: list[_Slot[JobT, ResultT]] = []
        rows = 0
        for s in self._queue:
            if batch and (s.solo or rows + s.rows > self._limit):
                break
            batch.append(s)
            rows += s.rows
            if s.solo:
                break
        for s in batch:
            self._queue.remove(s)
        return batch

    def _execute(self, batch: list[_Slot[JobT, ResultT]]) -> None:
        if not batch:
            return
        rows = sum(s.rows for s in batch)
        self.batches = [*self.batches[-999:], rows]
        if not batch[0].solo:
            self._recent.append(rows)
        try:
            results = self._run_batch([s.job for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} jobs")
        except Exception as exc:
            if len(batch) == 1:
                self._settle(batch[0], None, exc)
                return
            for s in batch:  # find the job that fails: each alone
                self._execute([s])
            return
        for s, result in zip(batch, results, strict=True):
            self._settle(s, result, None)

    def _settle(self, slot: _Slot[JobT, ResultT], result: ResultT | None, error: BaseException | None) -> None:
        with self._cond:
            slot.result, slot.error, slot.done = result, error, True
            self._cond.notify_all()
