"""The :class:`Collector`: runs jobs through one compiled agent and scores each trajectory as a record.

It renders a task's input images once (img2img), resumes a half-done trajectory from the SQLite
checkpoint (thread id = trajectory id), and raises :class:`CollectError`.
:func:`synthetic_tools` makes the in-process synthetic tool server it usually runs on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Self

from visioncreator.graph import BranchPoint, TaskRunner, ToolClient, open_checkpointer
from visioncreator.policy import Policy, Task
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.jobs import Job, plan_jobs
from visioncreator.rl.collection.records import CollectTask, TrajectoryRecord, policy_id_of, policy_info
from visioncreator.rl.errors import RLError
from visioncreator.tool_servers import ImageStore
from visioncreator.tool_servers.synthetic import GroundTruth, Scene

__all__ = ["CollectError", "Collector", "synthetic_tools"]


class CollectError(RLError):
    """A trajectory could not be collected (the message names the task, sample and trajectory id)."""


def synthetic_tools(config: CollectConfig, *, max_queue: int = 4096) -> ToolClient:
    """A client of an in-process synthetic tool server on ``config.store`` with its fault rate and tool seed.

    The queue is deep so that a large concurrency never gets calls refused (which would change trajectories).
    """
    from visioncreator.tool_servers import ServerSettings, build_server

    if config.store is None:
        raise CollectError("CollectConfig.store must be set to build the synthetic tool server")
    settings = ServerSettings(
        store_root=config.store, fault_rate=config.fault_rate, tool_seed=config.tool_seed, max_queue=max_queue,
        simulated_latency_s=config.tool_latency_s, **config.observer_settings(),
    )  # fmt: skip
    return ToolClient(server=build_server(settings))


class Collector:
    """Runs jobs through one compiled agent. Use as an async context manager (it opens the checkpointer).

    Args:
        policy: Writes every turn.
        tools: A connected tool client.
        config: The collection's settings.

    """

    def __init__(self, *, policy: Policy, tools: ToolClient, config: CollectConfig) -> None:
        self.policy = policy
        self.tools = tools
        self.config = config
        self.policy_info = policy_info(policy)
        self.policy_id = config.policy_id or policy_id_of(self.policy_info)
        self._inputs: dict[int, asyncio.Task[tuple[tuple[str, ...], tuple[Scene, ...]]]] = {}
        self._bases: dict[int, asyncio.Task[BranchPoint | None]] = {}
        self._runner: TaskRunner | None = None
        self._saver: Any = None

    async def __aenter__(self) -> Self:
        checkpointer = None
        if self.config.checkpoint is not None or self.config.branch_at is not None:
            # Branching forks checkpoints: without a file, they are kept in memory.
            self._saver = open_checkpointer(self.config.checkpoint)
            checkpointer = await self._saver.__aenter__()
        self._runner = TaskRunner(
            policy=self.policy, tools=self.tools, config=self.config.agent_config(), checkpointer=checkpointer
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._saver is not None:
            await self._saver.__aexit__(*exc)
        self._saver = None

    def jobs(self, tasks: Iterable[Any]) -> list[Job]:
        """The jobs of ``tasks`` under this collector's policy id."""
        return plan_jobs(tasks, self.config, self.policy_id)

    async def run(self, job: Job) -> TrajectoryRecord:
        """Collect one trajectory (resuming its checkpoint, if any) and score it."""
        if self._runner is None:
            raise CollectError("use the Collector as `async with Collector(...)` before running jobs")
        handles, scenes = await self._inputs_of(job)
        task = job.task.task.model_copy(update={"inputs": handles}) if job.task.inputs else job.task.task
        point = await self._branch_point(job, task) if self.config.branch_at else None
        if point is not None:
            result = await self._runner.branch(
                point, seed=job.seed, thread_id=job.trajectory_id, record=self.config.record_config()
            )
        else:
            result = await self._runner.run(
                task, seed=job.seed, thread_id=job.trajectory_id, record=self.config.record_config(),
                call_seed_base=job.call_seed_base,
            )  # fmt: skip
        record = TrajectoryRecord(
            **dict(result.trajectory),
            trajectory_id=job.trajectory_id,
            task_id=job.task.task_id,
            group_id=job.group_id,
            sample_index=job.sample_index,
            tool_seed=self.config.tool_seed,
            policy=self.policy_info,
            checklist=job.task.checklist,
            input_scenes=scenes,
        )
        return record.scored(self.config.rewards)

    async def _branch_point(self, job: Job, task: Task) -> BranchPoint | None:
        """The checkpoint of the task's base run that the job's group branches from (one base per task).

        A base that never reached the node (or fewer times than ``branch_index``) has no such point:
        then every member of the group runs from the start.
        """
        if job.task_index not in self._bases:
            self._bases[job.task_index] = asyncio.ensure_future(self._base_point(job, task))
        return await asyncio.shield(self._bases[job.task_index])

    async def _base_point(self, job: Job, task: Task) -> BranchPoint | None:
        assert self._runner is not None
        assert self.config.branch_at is not None
        base = f"{job.group_id}.base"
        await self._runner.run(task, seed=self.config.seed, thread_id=base, call_seed_base=job.call_seed_base)
        points = await self._runner.branch_points(base, self.config.branch_at)
        return points[self.config.branch_index] if self.config.branch_index < len(points) else None

    async def _inputs_of(self, job: Job) -> tuple[tuple[str, ...], tuple[Scene, ...]]:
        # One rendering per task, shared by its samples (they run concurrently).
        if job.task_index not in self._inputs:
            self._inputs[job.task_index] = asyncio.ensure_future(self._prepare_inputs(job.task))
        return await asyncio.shield(self._inputs[job.task_index])

    async def _prepare_inputs(self, task: CollectTask) -> tuple[tuple[str, ...], tuple[Scene, ...]]:
        scenes: list[Scene] = []
        if not task.inputs:
            for handle in task.task.inputs:
                truth = await self.tools.read_truth(handle)
                if truth is not None:
                    scenes.append(GroundTruth.model_validate(truth).scene)
            return task.task.inputs, tuple(scenes)
        if self.config.store is None:
            raise CollectError(f"task {task.task_id} has input images: set CollectConfig.store to the tool's store")
        from visioncreator.tool_servers.synthetic import SyntheticBackend, SyntheticSettings

        store = ImageStore(self.config.store)
        backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
        handles: list[str] = []
        for image in task.inputs:
            generated = await backend.text_to_image(image)
            assert generated.truth is not None  # the synthetic back end always knows its scene
            handles.append(store.put(generated.image, generated.truth).handle)
            scenes.append(generated.truth.scene)
        return tuple(handles), tuple(scenes)
