"""Collect GRPO trajectories: tasks x group size through the compiled graph, concurrently, as records.

:func:`collect` returns the records in memory (the GRPO rollout calls it with a local policy);
:func:`collect_to` appends them to a JSONL file as they finish and, re-run after a crash, skips
the trajectory ids the file already holds and resumes half-done trajectories from the SQLite
checkpoint (thread id = trajectory id). Sample ``i`` of a task runs with seed ``config.seed + i``.
:func:`run_jobs` is the concurrent loop both use (and the Ray workers too).

One collection writes a records file at a time (:class:`visioncreator.graph.FileLock` on
``<file>.lock``; collections into other files of the same folder run side by side). A lost tool
server stops the collection with a :class:`CollectError` that says so: the job it hit records
nothing, and running the same collection again collects what is missing.

``visioncreator collect --help`` (or ``python -m visioncreator.rl.collection --help``) is the command line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from visioncreator.graph import FileLock, Progress, ToolClient, ToolServerUnavailable
from visioncreator.policy import Policy
from visioncreator.rl.collection.collector import CollectError, Collector
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.jobs import Job
from visioncreator.rl.collection.records import TrajectoryRecord, append_record, repair_records

__all__ = [
    "INFRASTRUCTURE_FAILURE",
    "CollectOutageError",
    "RecordHandler",
    "appending",
    "collect",
    "collect_to",
    "collect_to_locked",
    "is_outage",
    "records_lock",
    "run_jobs",
]

INFRASTRUCTURE_FAILURE = (
    "infrastructure failure (tool server lost) — not recorded; run again to collect the missing trajectories"
)
"""What a :class:`CollectOutageError` says: a job stopped because the tool server was lost."""


class CollectOutageError(CollectError):
    """A job stopped because the tool server was lost: an outage, not the policy's failure; nothing recorded."""


RecordHandler = Callable[[TrajectoryRecord], None]
"""Called with each record as it finishes."""


def _progress_bar(total: int, show: bool) -> Progress:
    """Trajectories done: a bar with rate and ETA on a terminal, plain lines otherwise; nothing unless ``show``."""
    return Progress(total, desc="collect", unit="traj", enabled=show)


async def run_jobs(
    jobs: Sequence[Job],
    run_one: Callable[[Job], Any],
    *,
    concurrency: int,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """Run ``jobs`` with ``concurrency`` workers; the records in job order.

    Raises:
        CollectError: A job failed (the others are cancelled; records already handed on stay). A lost
            tool server raises :class:`CollectOutageError` (:data:`INFRASTRUCTURE_FAILURE`).

    """
    results: dict[int, TrajectoryRecord] = {}
    pending = iter(enumerate(jobs))
    bar = _progress_bar(len(jobs), progress)

    async def worker() -> None:
        for k, job in pending:  # one shared iterator: next() never awaits, so no job runs twice
            try:
                record = await run_one(job)
            except Exception as exc:
                where = f"task {job.task.task_id} sample {job.sample_index} (trajectory {job.trajectory_id})"
                if is_outage(exc):
                    raise CollectOutageError(f"{where}: {INFRASTRUCTURE_FAILURE}: {exc}") from exc
                raise CollectError(f"{where}: {exc}") from exc
            results[k] = record
            if on_record is not None:
                on_record(record)
            bar.update()

    # Plain tasks, not a TaskGroup: the first failure cancels the rest and is raised as itself.
    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(jobs)))]
    try:
        if workers:
            await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in workers:
            task.cancel()
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
        bar.close()
    for outcome in outcomes:
        if isinstance(outcome, CollectError):
            raise outcome
    return [results[k] for k in range(len(jobs))]


async def collect(
    tasks: Iterable[Any],
    *,
    policy: Policy,
    tools: ToolClient,
    config: CollectConfig,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """Collect ``config.group_size`` trajectories of every task, scored; in task-major, sample order.

    Args:
        tasks: ``SuiteTask``s (or their JSON dicts), ``Task``s or :class:`CollectTask`s.
        policy: Any :class:`visioncreator.policy.Policy`.
        tools: A connected tool client (img2img inputs go into ``config.store``, which it must share).
        config: The collection's settings.
        on_record: Called with each record as it finishes.
        progress: Show a tqdm bar on stderr.

    """
    async with Collector(policy=policy, tools=tools, config=config) as collector:
        jobs = collector.jobs(tasks)
        return await run_jobs(
            jobs, collector.run, concurrency=config.concurrency, on_record=on_record, progress=progress
        )


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the tool server was lost (a :class:`ToolServerUnavailable`, maybe in a group)."""
    if isinstance(exc, ToolServerUnavailable):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(ToolServerUnavailable) is not None


def records_lock(path: str | Path) -> FileLock:
    """The lock a collection holds on its records file while it writes it (``<file>.lock`` beside it)."""
    return FileLock(path, what="a collection")


async def collect_to(
    path: str | Path,
    tasks: Iterable[Any],
    *,
    policy: Policy,
    tools: ToolClient,
    config: CollectConfig,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """Like :func:`collect`, appending each record to the JSONL file ``path`` as it finishes.

    Trajectory ids already in the file are skipped (a torn last line is cut off first), so a re-run
    after a crash adds exactly what is missing. The file's :func:`records_lock` is held throughout.
    Returns the records written by this call.

    Raises:
        FolderLockedError: Another process is collecting into ``path`` (nothing was written).
        CollectError: A job failed (see :func:`run_jobs`); the records written before stay.
    """
    with records_lock(path):
        return await collect_to_locked(
            path, tasks, policy=policy, tools=tools, config=config, on_record=on_record, progress=progress
        )


async def collect_to_locked(
    path: str | Path,
    tasks: Iterable[Any],
    *,
    policy: Policy,
    tools: ToolClient,
    config: CollectConfig,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """:func:`collect_to` for a caller that already holds ``records_lock(path)``.

    The command line takes the lock before it starts a tool server, so that a second collection
    into the same file stops before it has written anything (a store folder included).
    """
    done, write = appending(path, on_record)
    async with Collector(policy=policy, tools=tools, config=config) as collector:
        jobs = [j for j in collector.jobs(tasks) if j.trajectory_id not in done]
        return await run_jobs(jobs, collector.run, concurrency=config.concurrency, on_record=write, progress=progress)


def appending(path: str | Path, on_record: RecordHandler | None) -> tuple[set[str], RecordHandler]:
    """The ids already in a records file, and a handler that appends each new record to it.

    For a caller holding ``records_lock(path)``: a torn last line is cut off first, and the handler
    appends each record before passing it to ``on_record``.
    """
    done = {r.trajectory_id for r in repair_records(path)}  # under the lock: a live writer's line is not torn

    def write(record: TrajectoryRecord) -> None:
        append_record(path, record)
        if on_record is not None:
            on_record(record)

    return done, write
