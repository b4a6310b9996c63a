"""Collect GRPO trajectories: tasks x group size through the compiled graph, concurrently, as records.

:func:`collect` returns the records in memory (the GRPO rollout calls it with a local policy);
:func:`collect_to` appends them to a JSONL file as they finish and, re-run after a crash, skips
the trajectory ids the file already holds and resumes half-done trajectories from the SQLite
checkpoint (thread id = trajectory id). Sample ``i`` of a task runs with seed ``config.seed + i``.

Run ``python -m visioncreator.rl.collector --help`` for the command line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from visioncreator.graph import AgentConfig, Budgets, TaskRunner, ToolClient, open_checkpointer
from visioncreator.policy import Policy
from visioncreator.rl.errors import RLError
from visioncreator.rl.records import (
    CollectTask,
    TrajectoryRecord,
    append_record,
    as_collect_task,
    group_id_for,
    policy_id_of,
    policy_info,
    repair_records,
    trajectory_id_for,
)
from visioncreator.rl.rewards import REWARDS, RewardWeights
from visioncreator.tool_servers import ImageStore
from visioncreator.tool_servers.synthetic import GroundTruth, Scene

__all__ = [
    "CollectConfig",
    "CollectError",
    "Collector",
    "Job",
    "as_collect_task",
    "collect",
    "collect_to",
    "plan_jobs",
    "policy_id_of",
    "policy_info",
    "run_jobs",
    "synthetic_tools",
]

RecordHandler = Callable[[TrajectoryRecord], None]


class CollectError(RLError):
    """A trajectory could not be collected (the message names the task, sample and trajectory id)."""


class CollectConfig(BaseModel):
    """How a collection runs: groups, seeds, tools, agent budgets, rewards and checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_size: int = Field(default=4, ge=1, description="Samples per task (the GRPO group).")
    concurrency: int = Field(default=8, ge=1, description="Trajectories in flight at once.")
    seed: int = Field(default=0, description="Base run seed: sample i of a task runs with seed + i.")
    tool_seed: int = Field(default=0, description="Seed of the synthetic tool server (its own randomness).")
    fault_rate: float = Field(default=0.3, ge=0.0, le=1.0, description="Synthetic fault injection rate.")
    store: Path | None = Field(
        default=None,
        description="Image store shared with the tool server: where input images are rendered and where the "
        "collector's own synthetic servers (CLI, Ray workers) keep images. Needed for tasks with inputs.",
    )
    reflect: bool = Field(default=True, description="Run the reflect node (AgentConfig.reflect).")
    observe: Literal["inspect", "image", "both"] = Field(default="inspect", description="AgentConfig.observe.")
    max_turns: int = Field(default=40, ge=1, description="Budgets.max_turns.")
    max_tool_calls: int = Field(default=48, ge=1, description="Budgets.max_tool_calls.")
    max_redos_per_image: int = Field(default=3, ge=0, description="Budgets.max_redos_per_image.")
    wall_time_s: float = Field(default=900.0, gt=0, description="Budgets.wall_time_s.")
    max_format_retries: int = Field(default=3, ge=1, description="AgentConfig.max_format_retries.")
    policy_timeout_s: float = Field(default=300.0, gt=0, description="AgentConfig.policy_timeout_s.")
    recursion_limit: int = Field(default=400, ge=1, description="AgentConfig.recursion_limit.")
    rewards: dict[str, float] = Field(
        default_factory=lambda: dataclasses.asdict(RewardWeights()),
        description="Reward name -> weight of the total (names of visioncreator.rl.REWARDS; missing ones weigh 0).",
    )
    checkpoint: Path | None = Field(default=None, description="SQLite checkpoint file for mid-trajectory resume.")
    policy_id: str | None = Field(
        default=None, description="Policy identity in trajectory ids; default: a hash of policy_info(policy)."
    )

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(REWARDS))
        if unknown:
            raise ValueError(f"unknown reward names {unknown}; known: {sorted(REWARDS)}")
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"reward weights must be non-negative with a positive sum, got {value}")
        return value

    def agent_config(self) -> AgentConfig:
        """The graph configuration these settings describe."""
        budgets = Budgets(
            max_turns=self.max_turns,
            max_tool_calls=self.max_tool_calls,
            max_redos_per_image=self.max_redos_per_image,
            wall_time_s=self.wall_time_s,
        )
        return AgentConfig(
            budgets=budgets,
            reflect=self.reflect,
            observe=self.observe,
            max_format_retries=self.max_format_retries,
            policy_timeout_s=self.policy_timeout_s,
            recursion_limit=self.recursion_limit,
        )

    def record_config(self) -> dict[str, Any]:
        """What a record keeps of the configuration: what shapes trajectories, not where files live."""
        return self.model_dump(mode="json", exclude={"concurrency", "store", "checkpoint"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One trajectory to collect."""

    task: CollectTask
    task_index: int
    sample_index: int
    seed: int
    trajectory_id: str
    group_id: str


def plan_jobs(tasks: Iterable[Any], config: CollectConfig, policy_id: str) -> list[Job]:
    """Every (task, sample) of a collection, task-major, with its deterministic ids."""
    jobs: list[Job] = []
    for t, raw in enumerate(tasks):
        task = as_collect_task(raw)
        group = group_id_for(task, seed=config.seed, tool_seed=config.tool_seed, policy_id=policy_id)
        for i in range(config.group_size):
            tid = trajectory_id_for(
                task, sample_index=i, seed=config.seed, tool_seed=config.tool_seed, policy_id=policy_id
            )
            jobs.append(
                Job(task=task, task_index=t, sample_index=i, seed=config.seed + i, trajectory_id=tid, group_id=group)
            )
    return jobs


def synthetic_tools(config: CollectConfig, *, max_queue: int = 4096) -> ToolClient:
    """A client of an in-process synthetic tool server on ``config.store`` with its fault rate and tool seed.

    The queue is deep so that a large concurrency never gets calls refused (which would change trajectories).
    """
    from visioncreator.tool_servers import ServerSettings, build_server

    if config.store is None:
        raise CollectError("CollectConfig.store must be set to build the synthetic tool server")
    settings = ServerSettings(
        store_root=config.store, fault_rate=config.fault_rate, tool_seed=config.tool_seed, max_queue=max_queue
    )
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
        self._runner: TaskRunner | None = None
        self._saver: Any = None

    async def __aenter__(self) -> Self:
        checkpointer = None
        if self.config.checkpoint is not None:
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
        result = await self._runner.run(
            task, seed=job.seed, thread_id=job.trajectory_id, record=self.config.record_config()
        )
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


class _NoBar:
    """Stands in for a tqdm bar when there is no bar to show."""

    def update(self, n: int = 1) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""


def _progress_bar(total: int, show: bool) -> Any:
    """A tqdm bar on stderr (the ``evals`` extra), or none when not asked for or tqdm is missing."""
    if not show:
        return _NoBar()
    try:
        tqdm = importlib.import_module("tqdm").tqdm  # untyped; imported late like every optional dependency
    except ImportError:
        print(f"collect: {total} trajectories (install tqdm for a progress bar)", file=sys.stderr)
        return _NoBar()
    return tqdm(total=total, file=sys.stderr, unit="traj", desc="collect")


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
        CollectError: A job failed (the others are cancelled; records already handed on stay).

    """
    results: dict[int, TrajectoryRecord] = {}
    pending = iter(enumerate(jobs))
    bar = _progress_bar(len(jobs), progress)

    async def worker() -> None:
        for k, job in pending:  # one shared iterator: next() never awaits, so no job runs twice
            try:
                record = await run_one(job)
            except Exception as exc:
                raise CollectError(
                    f"task {job.task.task_id} sample {job.sample_index} (trajectory {job.trajectory_id}): {exc}"
                ) from exc
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


@asynccontextmanager
async def _records_file(path: str | Path) -> AsyncIterator[set[str]]:
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    yield {r.trajectory_id for r in repair_records(file)}


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
    after a crash adds exactly what is missing. Returns the records written by this call.
    """
    async with (
        _records_file(path) as done,
        Collector(policy=policy, tools=tools, config=config) as collector,
    ):
        jobs = [j for j in collector.jobs(tasks) if j.trajectory_id not in done]

        def write(record: TrajectoryRecord) -> None:
            append_record(path, record)
            if on_record is not None:
                on_record(record)

        return await run_jobs(jobs, collector.run, concurrency=config.concurrency, on_record=write, progress=progress)
