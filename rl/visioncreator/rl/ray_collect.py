"""The collector on Ray: workers are Ray actors, each with its own policy and synthetic tool server.

The driver plans the same jobs as the local path (same trajectory ids), hands them out round
robin to ``workers`` async actors, and writes the records they send back exactly as
:func:`visioncreator.rl.collector.collect_to` does. Each actor builds its policy from a picklable
:class:`PolicySpec` and an in-process synthetic tool server on ``config.store``, which must be a
folder every worker sees (one machine, or a shared file system).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.graph.client import ToolClient
from visioncreator.policy.types import Policy
from visioncreator.rl.collector import (
    CollectConfig,
    CollectError,
    Collector,
    Job,
    plan_jobs,
    run_jobs,
    synthetic_tools,
)
from visioncreator.rl.records import TrajectoryRecord, append_record, policy_id_of, repair_records

__all__ = ["PolicySpec", "RayWorker", "collect_ray", "collect_ray_to", "ensure_ray"]

RecordHandler = Callable[[TrajectoryRecord], None]


class PolicySpec(BaseModel):
    """A policy a Ray worker can build on its own: the scripted expert, or a local transformers model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["expert", "transformers"] = "expert"
    settings: dict[str, Any] = Field(
        default_factory=dict, description="ExpertConfig fields (expert) or LocalPolicySettings fields (transformers)."
    )
    model: str | None = Field(default=None, description="Model directory (transformers).")

    def build(self, tools: ToolClient) -> Policy:
        """The policy; a transformers policy reads images through ``tools``."""
        if self.kind == "expert":
            from visioncreator.graph.offline import expert_policy
            from visioncreator.policy.expert import ExpertConfig

            return expert_policy(ExpertConfig(**self.settings))
        if self.model is None:
            raise CollectError("PolicySpec(kind='transformers') needs model, a model directory")
        from visioncreator.policy.local import LocalPolicySettings, TransformersPolicy

        return TransformersPolicy(self.model, settings=LocalPolicySettings(**self.settings), images=tools)


class RayWorker:
    """A Ray actor body: one policy, one in-process synthetic tool server, one :class:`Collector`.

    The tool client and checkpointer hold task groups that must close in the task that opened
    them, so one long-lived service task owns them while method calls come and go.
    """

    def __init__(self, policy: PolicySpec, config: CollectConfig) -> None:
        self._spec = policy
        self._config = config
        self._collector: Collector | None = None
        self._service: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    async def _serve(self) -> None:
        async with synthetic_tools(self._config) as tools:
            policy = self._spec.build(tools)
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


async def _run_on_ray(
    tasks: Iterable[Any],
    *,
    policy: PolicySpec,
    config: CollectConfig,
    address: str,
    workers: int,
    skip: set[str],
    on_record: RecordHandler | None,
    progress: bool,
) -> list[TrajectoryRecord]:
    import ray

    if config.store is None:
        raise CollectError("collecting on Ray needs CollectConfig.store, a folder every worker can reach")
    if workers < 1:
        raise CollectError(f"workers must be at least 1, got {workers}")
    ensure_ray(address)
    actor_class: Any = ray.remote(RayWorker)
    actors: list[Any] = [
        actor_class.options(num_cpus=1, max_concurrency=max(1, config.concurrency)).remote(policy, config)
        for _ in range(workers)
    ]
    try:
        info = await actors[0].info.remote()
        planned = plan_jobs(tasks, config, config.policy_id or policy_id_of(info))
        jobs = [j for j in planned if j.trajectory_id not in skip]
        turn = itertools.count()

        async def run_one(job: Job) -> TrajectoryRecord:
            actor = actors[next(turn) % len(actors)]
            record: TrajectoryRecord = await actor.run.remote(job)
            return record

        concurrency = config.concurrency * len(actors)
        return await run_jobs(jobs, run_one, concurrency=concurrency, on_record=on_record, progress=progress)
    finally:
        for actor in actors:
            try:
                await actor.close.remote()
            finally:
                ray.kill(actor)


async def collect_ray(
    tasks: Iterable[Any],
    *,
    policy: PolicySpec,
    config: CollectConfig,
    address: str = "local",
    workers: int = 2,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """:func:`visioncreator.rl.collector.collect` with Ray actors as workers; the same records.

    Args:
        tasks: Suite tasks, ``Task``s or ``CollectTask``s.
        policy: What each worker builds.
        config: The collection's settings (``store`` is required: the workers' shared image store).
        address: ``local`` or a Ray cluster address.
        workers: Ray actors (each takes one CPU).
        on_record: Called with each record as it arrives.
        progress: Show a tqdm bar on stderr.

    """
    return await _run_on_ray(
        tasks, policy=policy, config=config, address=address, workers=workers, skip=set(), on_record=on_record,
        progress=progress,
    )  # fmt: skip


async def collect_ray_to(
    path: str | Path,
    tasks: Iterable[Any],
    *,
    policy: PolicySpec,
    config: CollectConfig,
    address: str = "local",
    workers: int = 2,
    on_record: RecordHandler | None = None,
    progress: bool = False,
) -> list[TrajectoryRecord]:
    """:func:`visioncreator.rl.collector.collect_to` with Ray actors as workers; the driver writes the file."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    done = {r.trajectory_id for r in repair_records(file)}

    def write(record: TrajectoryRecord) -> None:
        append_record(file, record)
        if on_record is not None:
            on_record(record)

    return await _run_on_ray(
        tasks, policy=policy, config=config, address=address, workers=workers, skip=done, on_record=write,
        progress=progress,
    )  # fmt: skip
