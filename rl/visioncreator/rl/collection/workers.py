"""What every multi-process collector shares: the policy recipe, per-worker checkpoints, job routing.

Both the process pool (:mod:`~visioncreator.rl.collection.pool`) and the Ray workers
(:mod:`~visioncreator.rl.collection.ray`) run ``N`` workers, each with its own policy built from a
picklable :class:`PolicySpec` (or ``tools -> Policy`` factory) and its own checkpoint file.

Checkpoints: SQLite allows one writer at a time and its WAL mode needs every process on one host,
so workers never share a file. With ``config.checkpoint`` set, worker ``i`` owns
:func:`worker_checkpoint` ``(config.checkpoint, i)``. Before the workers start, the driver reads
which trajectories each of those files holds (:class:`SlotRouter`) and sends every such trajectory
back to the worker owning its file, so a collection re-run after a killed worker or driver resumes
mid-trajectory. A trajectory whose checkpoint sits in a file no worker owns now (fewer workers
than before) starts over: trajectories are deterministic, so that costs time, never a duplicate
or a lost record.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.graph import ToolClient
from visioncreator.policy import Policy
from visioncreator.rl.collection.collector import CollectError
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.jobs import Job, plan_jobs
from visioncreator.rl.collection.records import TrajectoryRecord, policy_id_of
from visioncreator.rl.collection.run import RecordHandler, run_jobs

__all__ = [
    "PolicyFactory",
    "PolicySpec",
    "SlotRouter",
    "WorkerGroup",
    "build_policy",
    "checkpointed_threads",
    "slot_config",
    "worker_checkpoint",
]

PolicyFactory = Callable[[ToolClient], Policy]
"""Builds a worker's policy from its tool client; must be picklable (a module-level function or class)."""


class PolicySpec(BaseModel):
    """A policy a worker process can build on its own: the scripted expert, or a local transformers model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["expert", "transformers"] = "expert"
    settings: dict[str, Any] = Field(
        default_factory=dict, description="ExpertConfig fields (expert) or LocalPolicySettings fields (transformers)."
    )
    model: str | None = Field(default=None, description="Model directory (transformers).")

    def build(self, tools: ToolClient) -> Policy:
        """The policy; a transformers policy reads images through ``tools``.

        Raises:
            CollectError: The spec does not describe a policy (unknown settings, no model directory).

        """
        if self.kind == "expert":
            from visioncreator.graph import expert_policy
            from visioncreator.policy import ExpertConfig

            try:
                config = ExpertConfig(**self.settings)
            except TypeError as exc:
                raise CollectError(f"PolicySpec(kind='expert') has settings ExpertConfig does not take: {exc}") from exc
            return expert_policy(config)
        if self.model is None:
            raise CollectError("PolicySpec(kind='transformers') needs model, a model directory")
        from visioncreator.policy import LocalPolicySettings, TransformersPolicy

        return TransformersPolicy(self.model, settings=LocalPolicySettings(**self.settings), images=tools)


def build_policy(policy: PolicySpec | PolicyFactory, tools: ToolClient) -> Policy:
    """A worker's policy from its recipe: a :class:`PolicySpec` or a ``tools -> Policy`` factory."""
    return policy.build(tools) if isinstance(policy, PolicySpec) else policy(tools)


def worker_checkpoint(path: str | Path, slot: int) -> Path:
    """Worker ``slot``'s own checkpoint file: ``records.sqlite`` -> ``records.worker0.sqlite``."""
    file = Path(path)
    return file.with_name(f"{file.stem}.worker{slot}{file.suffix or '.sqlite'}")


def checkpointed_threads(path: str | Path) -> set[str]:
    """The thread (trajectory) ids a SQLite checkpoint file holds; none for a missing or empty file.

    Call it only while no process writes the file (the driver does, before its workers start).
    """
    file = Path(path)
    if not file.exists():
        return set()
    with sqlite3.connect(file) as db:
        try:
            return {row[0] for row in db.execute("select distinct thread_id from checkpoints")}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return set()
            raise CollectError(f"cannot read the checkpoint file {file}: {exc}") from exc


def slot_config(config: CollectConfig, slot: int) -> CollectConfig:
    """Worker ``slot``'s settings: its own checkpoint file (:func:`worker_checkpoint`), if any."""
    if config.checkpoint is None:
        return config
    return config.model_copy(update={"checkpoint": worker_checkpoint(config.checkpoint, slot)})


class SlotRouter:
    """Which worker runs a trajectory: the one whose checkpoint file holds it, else the least busy.

    Construct it before the workers start (it reads their checkpoint files). A trajectory stays
    with the worker that first ran it, so its checkpoint is always in that worker's file.

    Args:
        workers: How many workers there are.
        checkpoint: ``CollectConfig.checkpoint`` (None: no files to read).

    """

    def __init__(self, workers: int, checkpoint: Path | None) -> None:
        self.workers = workers
        self.busy = [0] * workers
        self._slot_of: dict[str, int] = {}
        if checkpoint is not None:
            for slot in range(workers):
                for tid in checkpointed_threads(worker_checkpoint(checkpoint, slot)):
                    self._slot_of.setdefault(tid, slot)

    def acquire(self, trajectory_id: str) -> int:
        """The slot that runs ``trajectory_id``, counted busy until :meth:`release`."""
        slot = self._slot_of.get(trajectory_id)
        if slot is None:  # the least busy worker; it keeps the trajectory's checkpoint from now on
            slot = min(range(self.workers), key=self.busy.__getitem__)
            self._slot_of[trajectory_id] = slot
        self.busy[slot] += 1
        return slot

    def release(self, slot: int) -> None:
        """One job of ``slot`` finished (or failed)."""
        self.busy[slot] -= 1


class WorkerGroup(ABC):
    """What the process pool and the Ray workers share: planning jobs and collecting them.

    Jobs are planned under the workers' policy id; each runs on the worker that owns its
    checkpoint (:class:`SlotRouter`); records come back in job order.
    """

    config: CollectConfig
    policy_info: dict[str, Any]
    _router: SlotRouter

    @property
    @abstractmethod
    def _started(self) -> bool:
        """Whether the workers are up (the group was entered)."""

    @property
    def _concurrency(self) -> int:
        """Trajectories in flight over all workers."""
        return self.config.concurrency

    @abstractmethod
    async def _run_on(self, slot: int, job: Job) -> TrajectoryRecord:
        """Run ``job`` on worker ``slot``."""

    async def _run(self, job: Job) -> TrajectoryRecord:
        slot = self._router.acquire(job.trajectory_id)
        try:
            return await self._run_on(slot, job)
        finally:
            self._router.release(slot)

    def jobs(self, tasks: Iterable[Any]) -> list[Job]:
        """The jobs of ``tasks`` under the workers' policy id."""
        return plan_jobs(tasks, self.config, self.config.policy_id or policy_id_of(self.policy_info))

    async def collect(
        self,
        tasks: Iterable[Any],
        *,
        skip: Iterable[str] = (),
        on_record: RecordHandler | None = None,
        progress: bool = False,
    ) -> list[TrajectoryRecord]:
        """Collect every job of ``tasks`` whose trajectory id is not in ``skip``; the records in job order.

        Raises:
            CollectError: A job failed or a worker died (the group is then unusable: leave it).

        """
        if not self._started:
            name = type(self).__name__
            raise CollectError(f"use {name} as `async with {name}(...)` before collecting")
        done = set(skip)
        jobs = [j for j in self.jobs(tasks) if j.trajectory_id not in done]
        return await run_jobs(jobs, self._run, concurrency=self._concurrency, on_record=on_record, progress=progress)
