"""The collector on Ray: workers are Ray actors, each with its own policy and synthetic tool server.

The driver plans the same jobs as the local path (same trajectory ids), hands each to the least
busy of ``workers`` async actors, and writes the records they send back exactly as
:func:`visioncreator.rl.collection.run.collect_to` does. Each actor builds its policy from a picklable
:class:`PolicySpec` (or any picklable ``tools -> Policy`` factory) and an in-process synthetic tool
server on ``config.store``, which must be a folder every worker sees (one machine, or a shared
file system).

Checkpoints and routing are those of every multi-process collector
(:mod:`~visioncreator.rl.collection.workers`): worker ``i`` owns its own checkpoint file, and a
half-done trajectory goes back to the worker whose file holds it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from visioncreator.rl.collection.collector import CollectError, Collector, synthetic_tools
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.jobs import Job
from visioncreator.rl.collection.records import TrajectoryRecord
from visioncreator.rl.collection.run import RecordHandler, appending, records_lock
from visioncreator.rl.collection.workers import (
    PolicyFactory,
    PolicySpec,
    SlotRouter,
    WorkerGroup,
    build_policy,
    checkpointed_threads,
    slot_config,
    worker_checkpoint,
)

__all__ = [
    "PolicyFactory",
    "PolicySpec",
    "RayWorker",
    "RayWorkers",
    "checkpointed_threads",
    "collect_ray",
    "collect_ray_to",
    "ensure_ray",
    "worker_checkpoint",
]


class RayWorker:
    """A Ray actor body: one policy, one in-process synthetic tool server, one :class:`Collector`.

    The tool client and checkpointer hold task groups that must close in the task that opened
    them, so one long-lived service task owns them while method calls come and go.
    """

    def __init__(self, policy: PolicySpec | PolicyFactory, config: CollectConfig) -> None:
        self._spec = policy
        self._config = config
        self._collector: Collector | None = None
        self._service: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    async def _serve(self) -> None:
        async with synthetic_tools(self._config) as tools:
            policy = build_policy(self._spec, tools)
            async with Collector(policy=policy, tools=tools, config=self._config) as collector:
                self._collector = collector
                self._ready.set()
                await self._stop.wait()

    async def _open(self) -> Collector:
        if self._service is None:
            self._service = asyncio.create_task(self._serve())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._service}, return_when=asyncio.FIRST_COMPLETED)
        if self._collector is None:
            ready.cancel()
            await self._service  # raises what went wrong while opening
            raise CollectError("the Ray worker stopped before it was ready")
        return self._collector

    async def info(self) -> dict[str, Any]:
        """The policy info every record of this worker carries."""
        return (await self._open()).policy_info

    async def run(self, job: Job) -> TrajectoryRecord:
        """Collect one trajectory."""
        return await (await self._open()).run(job)

    async def cpu_seconds(self) -> float:
        """CPU seconds this worker process has used so far."""
        return time.process_time()

    async def close(self) -> None:
        """Close the collector and the tool client."""
        if self._service is not None:
            self._stop.set()
            await self._service


def ensure_ray(address: str, *, num_cpus: int = 2) -> None:
    """Connect to Ray: ``local`` starts a local cluster of ``num_cpus`` CPUs; anything else is an address.

    Does nothing when Ray is already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)


class RayWorkers(WorkerGroup):
    """A pool of Ray collector workers that lives across collections. Use as an async context manager.

    Entering starts the actors and waits until each has built its policy and tool server, so the
    first :meth:`collect` pays no start-up. Leaving closes them; after an error they are killed
    (their checkpoint files stay consistent: SQLite writes are transactions).

    Args:
        policy: What each worker builds: a :class:`PolicySpec` or a picklable ``tools -> Policy`` factory.
        config: The collection's settings (``store`` is required: the workers' shared image store;
            ``concurrency`` is per worker).
        address: ``local`` or a Ray cluster address (ignored when Ray is already initialised).
        workers: Ray actors (each takes one CPU).
        close_timeout_s: How long leaving waits for the workers to close before killing them.

    """

    def __init__(
        self,
        policy: PolicySpec | PolicyFactory,
        config: CollectConfig,
        *,
        address: str = "local",
        workers: int = 2,
        close_timeout_s: float = 30.0,
    ) -> None:
        if config.store is None:
            raise CollectError("collecting on Ray needs CollectConfig.store, a folder every worker can reach")
        if workers < 1:
            raise CollectError(f"workers must be at least 1, got {workers}")
        if config.branch_at is not None:
            # Each worker would run its own base: a group's members could fork from different states.
            raise CollectError("branched rollouts (branch_at) run on one machine: collect without Ray")
        self.policy = policy
        self.config = config
        self.address = address
        self.workers = workers
        self.close_timeout_s = close_timeout_s
        self.policy_info: dict[str, Any] = {}
        self._actors: list[Any] = []
        self._router = SlotRouter(workers, None)

    async def __aenter__(self) -> Self:
        import ray

        ensure_ray(self.address)
        self._router = SlotRouter(self.workers, self.config.checkpoint)
        actor_class: Any = ray.remote(RayWorker)
        options = actor_class.options(num_cpus=1, max_concurrency=self.config.concurrency + 1)
        self._actors = [options.remote(self.policy, slot_config(self.config, i)) for i in range(self.workers)]
        try:
            infos = await asyncio.gather(*(actor.info.remote() for actor in self._actors))
        except BaseException:
            self._kill()
            raise
        if any(info != infos[0] for info in infos):
            self._kill()
            raise CollectError(f"the Ray workers built different policies: {infos}")
        self.policy_info = infos[0]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if exc[0] is None:
            import ray

            try:
                async with asyncio.timeout(self.close_timeout_s):
                    await asyncio.gather(*(actor.close.remote() for actor in self._actors))
            except (TimeoutError, ray.exceptions.RayError):
                pass  # killed below either way; the checkpoint files are transactional
        self._kill()

    def _kill(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    async def cpu_seconds(self) -> list[float]:
        """CPU seconds each worker process has used so far (for throughput accounting)."""
        return list(await asyncio.gather(*(actor.cpu_seconds.remote() for actor in self._actors)))

    @property
    def _started(self) -> bool:
        return bool(self._actors)

    @property
    def _concurrency(self) -> int:
        return self.config.concurrency * self.workers  # config.concurrency is per worker here

    async def _run_on(self, slot: int, job: Job) -> TrajectoryRecord:
        record: TrajectoryRecord = await self._actors[slot].run.remote(job)
        return record


async def collect_ray(
    tasks: Iterable[Any],
    *,
    policy: PolicySpec | PolicyFactory,
    config: CollectConfig,
    address: str = "local",
    workers: int = 2,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """:func:`visioncreator.rl.collection.run.collect` with Ray actors as workers; the same records.

    Args:
        tasks: Suite tasks, ``Task``s or ``CollectTask``s.
        policy: What each worker builds (see :class:`RayWorkers`).
        config: The collection's settings (``store`` is required: the workers' shared image store).
        address: ``local`` or a Ray cluster address.
        workers: Ray actors (each takes one CPU).
        on_record: Called with each record as it arrives.
        progress: Show a tqdm bar on stderr.

    """
    async with RayWorkers(policy, config, address=address, workers=workers) as pool:
        return await pool.collect(tasks, on_record=on_record, progress=progress)


async def collect_ray_to(
    path: str | Path,
    tasks: Iterable[Any],
    *,
    policy: PolicySpec | PolicyFactory,
    config: CollectConfig,
    address: str = "local",
    workers: int = 2,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """:func:`visioncreator.rl.collection.run.collect_to` with Ray actors as workers; the driver writes the file.

    Trajectory ids already in the file are skipped; with ``config.checkpoint`` set, half-done
    trajectories resume from their worker's checkpoint file (see the module docstring).
    """
    file = Path(path)
    with records_lock(file):  # one collection writes a records file at a time
        done, write = appending(file, on_record)
        async with RayWorkers(policy, config, address=address, workers=workers) as pool:
            return await pool.collect(tasks, skip=done, on_record=write, progress=progress)
