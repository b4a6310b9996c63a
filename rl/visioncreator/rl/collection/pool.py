"""The collector on a pool of worker processes: ``visioncreator collect``'s default on more than one core.

One event loop runs on one core, and a trajectory costs tens of milliseconds of CPU (graph, MCP,
images), so a single loop caps throughput however many trajectories wait on the back end. The
pool runs ``workers`` processes (the ``spawn`` or ``forkserver`` start method: never ``fork``,
which would copy the driver's event loop and threads). Each builds its own policy from a
picklable :class:`~visioncreator.rl.collection.workers.PolicySpec` (or ``tools -> Policy``
factory) and its own in-process synthetic tool server on ``config.store`` (or connects to the tool
server a :class:`visioncreator.graph.ToolServerSpec` names), and runs the jobs the driver sends it.

The driver (this process) plans the same jobs as the single loop (the same trajectory ids), keeps
``config.concurrency`` of them in flight across the pool through
:func:`~visioncreator.rl.collection.run.run_jobs` (each worker holds its share), routes them with
the shared :class:`~visioncreator.rl.collection.workers.SlotRouter` (per-worker checkpoint files,
resume to the worker that holds a half-done trajectory), and writes the records that come back
exactly as :func:`~visioncreator.rl.collection.run.collect_to` does. Messages travel over a socket
pair as length-prefixed pickles: a record arrives without being validated or parsed again.

A worker that dies stops the collection with a :class:`CollectError` naming it and its exit code;
every record written before stays, and running the collection again resumes. A worker whose
driver dies sees its socket close and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import pickle
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.graph import ToolServerSpec, ToolServerUnavailable
from visioncreator.rl.collection.collector import CollectError
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.jobs import Job
from visioncreator.rl.collection.pool_worker import receive, send, worker_main
from visioncreator.rl.collection.records import TrajectoryRecord
from visioncreator.rl.collection.run import RecordHandler, appending, records_lock
from visioncreator.rl.collection.workers import PolicyFactory, PolicySpec, SlotRouter, WorkerGroup, slot_config

__all__ = ["PoolSettings", "ProcessWorkers", "collect_pool", "collect_pool_to", "default_workers"]


def default_workers() -> int:
    """Worker processes by default: one per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class PoolSettings(BaseModel):
    """How the process pool runs (the collection itself is a :class:`CollectConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(default_factory=default_workers, ge=1, description="Worker processes (default: one per CPU).")
    start_method: Literal["spawn", "forkserver"] = Field(
        default="spawn", description="How worker processes start (multiprocessing start method; never fork)."
    )
    start_timeout_s: float = Field(
        default=300.0, gt=0, description="Seconds every worker may take to import, build its policy and tool server."
    )
    close_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds leaving the pool waits for workers to close before killing them."
    )
    profile_dir: Path | None = Field(
        default=None,
        description="Write each worker's cProfile statistics (CPU time of its event-loop thread) to "
        "worker<i>-<pid>.prof here when it closes.",
    )


@dataclass(kw_only=True, eq=False)
class _Worker:
    """The driver's side of one worker process."""

    slot: int
    process: Any
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ready: asyncio.Future[dict[str, Any]]
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    fatal: str | None = None
    dead: str | None = None
    listener: asyncio.Task[None] | None = None

    def name(self) -> str:
        return f"collection worker {self.slot} (pid {self.process.pid})"


class ProcessWorkers(WorkerGroup):
    """A pool of collector worker processes that lives across collections. Use as an async context manager.

    Entering starts the processes and waits until each has built its policy and tool server.
    Leaving stops them; after an error they are killed (their checkpoint files stay consistent:
    SQLite writes are transactions).

    Args:
        policy: What each worker builds: a :class:`PolicySpec` or a picklable ``tools -> Policy`` factory.
        config: The collection's settings (``concurrency`` is the total over all workers; ``store``
            is required unless ``tools`` names a server).
        settings: How the pool runs.
        tools: A tool server each worker connects to; None: each runs its own in-process synthetic server.

    """

    def __init__(
        self,
        policy: PolicySpec | PolicyFactory,
        config: CollectConfig,
        *,
        settings: PoolSettings | None = None,
        tools: ToolServerSpec | None = None,
    ) -> None:
        if config.store is None and tools is None:
            raise CollectError("a process pool needs CollectConfig.store, the image store its workers' servers share")
        if config.branch_at is not None:
            # Each worker would run its own base: a group's members could fork from different states.
            raise CollectError("branched rollouts (branch_at) run in one process: collect with one worker")
        self.policy = policy
        self.config = config
        self.settings = settings or PoolSettings()
        self.tools = tools
        self.policy_info: dict[str, Any] = {}
        self._workers: list[_Worker] = []
        self._router = SlotRouter(self.settings.workers, None)
        self._keys = itertools.count()

    async def __aenter__(self) -> Self:
        self._router = SlotRouter(self.settings.workers, self.config.checkpoint)
        try:
            for slot in range(self.settings.workers):
                self._workers.append(await self._start(slot))
            async with asyncio.timeout(self.settings.start_timeout_s):
                infos = await asyncio.gather(*(w.ready for w in self._workers))
        except TimeoutError:
            await self._kill()
            wait = self.settings.start_timeout_s
            raise CollectError(f"the collection workers were not ready within {wait} s") from None
        except BaseException:
            await self._kill()
            raise
        if any(info != infos[0] for info in infos):
            await self._kill()
            raise CollectError(f"the collection workers built different policies: {infos}")
        self.policy_info = infos[0]
        return self

    async def _start(self, slot: int) -> _Worker:
        context: Any = multiprocessing.get_context(self.settings.start_method)
        ours, theirs = socket.socketpair()
        profile = self.settings.profile_dir / f"worker{slot}" if self.settings.profile_dir else None
        args = (theirs, self.policy, slot_config(self.config, slot), self.tools, profile)
        process = context.Process(target=worker_main, args=args, name=f"visioncreator-collect-{slot}", daemon=True)
        try:
            process.start()
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            ours.close()
            raise CollectError(
                f"cannot start collection worker {slot}: its policy must be picklable (a PolicySpec or a module-level "
                f"tools -> Policy factory), got {self.policy!r}: {exc}"
            ) from exc
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = _Worker(
            slot=slot, process=process, reader=reader, writer=writer, ready=asyncio.get_running_loop().create_future()
        )
        worker.listener = asyncio.create_task(self._listen(worker))
        return worker

    async def _listen(self, worker: _Worker) -> None:
        """Hand each message of ``worker`` to whoever waits for it; at its end, fail what is still waiting."""
        while (message := await receive(worker.reader)) is not None:
            kind = message[0]
            if kind == "ready":
                worker.ready.set_result(message[1])
            elif kind == "fatal":
                worker.fatal = message[1]
            else:  # record, failed or cpu: answers to one request each
                waiter = worker.pending.pop(message[1] if kind != "cpu" else -1, None)
                if waiter is None or waiter.done():
                    continue
                if kind == "failed":
                    _, _, outage, text = message
                    waiter.set_exception(ToolServerUnavailable(text) if outage else CollectError(text))
                else:
                    waiter.set_result(message[-1])
        await asyncio.to_thread(worker.process.join, self.settings.close_timeout_s)  # for its exit code
        code = worker.process.exitcode
        if worker.fatal is not None:
            stage = "failed" if worker.ready.done() else "could not start"
            worker.dead = f"{worker.name()} {stage}: {worker.fatal}"
        else:
            worker.dead = f"{worker.name()} exited with code {code}"
        waiting = [worker.ready, *worker.pending.values()]
        worker.pending.clear()
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(CollectError(worker.dead))

    async def _request(self, worker: _Worker, key: int, message: tuple[Any, ...]) -> Any:
        if worker.dead is not None:
            raise CollectError(worker.dead)
        waiter = asyncio.get_running_loop().create_future()
        worker.pending[key] = waiter
        try:
            with contextlib.suppress(ConnectionError):  # else the listener fails the waiter with the reason
                await send(worker.writer, message)
            return await waiter
        finally:
            worker.pending.pop(key, None)

    @property
    def _started(self) -> bool:
        return bool(self._workers)

    async def _run_on(self, slot: int, job: Job) -> TrajectoryRecord:
        key = next(self._keys)
        record: TrajectoryRecord = await self._request(self._workers[slot], key, ("job", key, job))
        return record

    async def cpu_seconds(self) -> list[float]:
        """CPU seconds each worker process has used so far (for throughput accounting)."""
        return list(await asyncio.gather(*(self._request(w, -1, ("cpu",)) for w in self._workers)))

    async def __aexit__(self, *exc: Any) -> None:
        if exc[0] is None:
            for worker in self._workers:
                if worker.dead is None:
                    with contextlib.suppress(ConnectionError):  # else it is gone already
                        await send(worker.writer, ("stop",))
        await self._kill(grace_s=self.settings.close_timeout_s if exc[0] is None else 0.0)

    async def _kill(self, grace_s: float = 0.0) -> None:
        """Wait up to ``grace_s`` for the workers to end, then kill what is left."""
        workers, self._workers = self._workers, []
        for worker in workers:
            await asyncio.to_thread(worker.process.join, grace_s)
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, self.settings.close_timeout_s)
            worker.writer.close()
            if worker.listener is not None:
                worker.listener.cancel()
                await asyncio.gather(worker.listener, return_exceptions=True)


async def collect_pool(
    tasks: Iterable[Any],
    *,
    policy: PolicySpec | PolicyFactory,
    config: CollectConfig,
    settings: PoolSettings | None = None,
    tools: ToolServerSpec | None = None,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """:func:`~visioncreator.rl.collection.run.collect` on a pool of worker processes; the same records.

    Args:
        tasks: Suite tasks, ``Task``s or ``CollectTask``s.
        policy: What each worker builds (see :class:`ProcessWorkers`).
        config: The collection's settings (``concurrency`` is the total over all workers).
        settings: How the pool runs (default: one worker per CPU).
        tools: A tool server every worker connects to; None: each its own in-process synthetic server.
        on_record: Called with each record as it arrives.
        progress: Show a tqdm bar on stderr.

    """
    async with ProcessWorkers(policy, config, settings=settings, tools=tools) as pool:
        return await pool.collect(tasks, on_record=on_record, progress=progress)


async def collect_pool_to(
    path: str | Path,
    tasks: Iterable[Any],
    *,
    policy: PolicySpec | PolicyFactory,
    config: CollectConfig,
    settings: PoolSettings | None = None,
    tools: ToolServerSpec | None = None,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """:func:`~visioncreator.rl.collection.run.collect_to` on a pool of worker processes; the driver writes the file.

    Trajectory ids already in the file are skipped; with ``config.checkpoint`` set, half-done
    trajectories resume from their worker's checkpoint file. The file's lock is held from before
    the workers start (they create the store) until they have stopped.

    Raises:
        FolderLockedError: Another process is collecting into ``path`` (nothing was written).
        CollectError: A job failed or a worker died; the records written before stay.

    """
    file = Path(path)
    with records_lock(file):
        done, write = appending(file, on_record)
        async with ProcessWorkers(policy, config, settings=settings, tools=tools) as pool:
            return await pool.collect(tasks, skip=done, on_record=write, progress=progress)
