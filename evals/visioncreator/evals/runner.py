"""Run a suite through the agent into a run folder: concurrent, resumable, scored, costed.

A run folder (see :mod:`visioncreator.evals.results`) is the whole state of a run. Running again
with the same folder skips every task id already in ``results.jsonl`` (nothing is re-scored), and
a task that was killed mid-trajectory continues from ``checkpoints.sqlite`` (its thread is
``visioncreator.graph.thread_id_for`` of the task and the seed), so the tool calls it finished
are not made again. Each task goes through ``visioncreator.graph.TaskRunner``, the one path from
a task to its trajectory.

One eval writes a folder at a time (:class:`visioncreator.graph.FolderLock`). Every file it writes
is named inside the folder (:func:`visioncreator.graph.inside`), a task's by
:func:`~visioncreator.evals.results.record_name` of its id. A lost tool server is an outage, not a
policy failure: the task is a ``TaskError(stage="infrastructure")``, no new task starts (they would
all fail the same way), and running the same command again retries them.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import ValidationError

from visioncreator.evals.errors import EvalSettingsError
from visioncreator.evals.reflection import classify_reflections, unreflected_images
from visioncreator.evals.results import (
    ERRORS_FILE,
    RESULTS_FILE,
    RUN_FILE,
    RunInfo,
    TaskCost,
    TaskError,
    TaskResult,
    read_results,
    record_name,
)
from visioncreator.evals.scoring import Judge, count_faults, score_answer
from visioncreator.evals.settings import EvalSettings
from visioncreator.evals.suites import SuiteTask, load_suite_checked, materialize_input
from visioncreator.graph import (
    CheckpointCorruptError,
    FolderLock,
    TaskRunner,
    ToolClient,
    ToolServerUnavailable,
    Trajectory,
    append_jsonl,
    check_checkpoint,
    expert_policy,
    inside,
    move_aside,
    open_checkpointer,
    open_policy,
    read_jsonl,
    repair_jsonl,
    served_model,
)
from visioncreator.policy import Policy, Task
from visioncreator.tool_servers import ImageStore

__all__ = ["EvalOutcome", "outcome_json", "run_eval", "task_cost"]

TRAJECTORIES = "trajectories"
CHECKPOINTS = "checkpoints.sqlite"
JUDGE_CACHE = "judge_cache.sqlite"


@dataclass(frozen=True)
class EvalOutcome:
    """What one invocation did."""

    total: int
    """Tasks selected from the suite (after the split filter and limit)."""
    loaded: int
    """Tasks that loaded from the suite (before the split filter and limit)."""
    skipped: int
    """Already in ``results.jsonl`` (not run, not re-scored)."""
    ran: int
    """Run and scored now."""
    failed: int
    """Crashed now (recorded in ``errors.jsonl``), outages not counted."""
    load_errors: int
    """Suite lines that did not load."""
    results: int
    """Results in the folder after the run."""
    infrastructure: int = 0
    """Stopped by a lost tool server now (``errors.jsonl``, stage ``infrastructure``): not scored."""
    not_run: int = 0
    """Not started because the tool server was lost; running the same command again runs them."""
    checkpoint_moved_to: str | None = None
    """Where ``restart`` moved a corrupt checkpoint database (None: it was not moved)."""


def task_cost(trajectory: Trajectory) -> TaskCost:
    """What a task cost, from its trajectory (token counts only where turns kept their token ids)."""
    turns, calls = trajectory.turns, trajectory.tool_calls
    return TaskCost(
        policy_calls=len(turns),
        prompt_tokens=sum(len(t.prompt_token_ids or ()) for t in turns),
        completion_tokens=sum(len(t.completion_token_ids or ()) for t in turns),
        tool_calls=len(calls),
        generator_s=sum(c.latency_s for c in trajectory.images_made()),
        policy_s=trajectory.timings.policy_s,
        wall_s=trajectory.timings.wall_s,
    )


def _versions() -> dict[str, str]:
    found: dict[str, str] = {"python": sys.version.split()[0]}
    for dist in ("visioncreator", "langgraph", "mcp"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found


def _prepare(settings: EvalSettings) -> None:
    """Create the folder; write ``run.json``, or check that an existing one has the same settings."""
    out = settings.out
    (out / TRAJECTORIES).mkdir(parents=True, exist_ok=True)
    repair_jsonl(out / RESULTS_FILE, TaskResult)
    repair_jsonl(out / ERRORS_FILE, TaskError)
    path = out / RUN_FILE
    wanted = settings.fingerprint()
    if path.exists():
        try:
            before = RunInfo.model_validate_json(path.read_bytes()).settings
        except ValidationError as exc:
            raise EvalSettingsError(
                f"{path} is not a RunInfo record ({exc.error_count()} problem(s), first: "
                f"{exc.errors(include_url=False)[0]['msg']}): fix it, or use another --out"
            ) from exc
        changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
        if changed:
            raise EvalSettingsError(
                f"{out} holds a run made with other settings ({', '.join(changed)}): use another --out to run these"
            )
        return
    info = RunInfo(
        suite=wanted["suite"], policy=settings.policy, tools=settings.tools, label=settings.label,
        settings=wanted, versions=_versions(), started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    path.write_text(info.model_dump_json(indent=1))


def _record_load_errors(out: Path, errors: Sequence[TaskError]) -> None:
    seen = {e.model_dump_json() for e in read_jsonl(out / ERRORS_FILE, TaskError)}
    for error in errors:
        if error.model_dump_json() not in seen:
            append_jsonl(out / ERRORS_FILE, error)


def _select(tasks: Sequence[SuiteTask], settings: EvalSettings) -> list[SuiteTask]:
    chosen = [t for t in tasks if not settings.splits or t.split in settings.splits]
    return chosen if settings.limit is None else chosen[: settings.limit]


@asynccontextmanager
async def _open_policy(settings: EvalSettings, tools: ToolClient) -> AsyncIterator[Policy]:
    if settings.policy == "expert":
        yield expert_policy(replace(settings.expert, seed=settings.seed))
        return
    async with open_policy(
        settings.policy, tools=tools, seed=settings.seed, model=settings.model, max_tokens=settings.max_tokens
    ) as policy:
        yield policy


@asynccontextmanager
async def _open_judge(settings: EvalSettings) -> AsyncIterator[Judge | None]:
    if not settings.judge:
        yield None
        return
    from visioncreator.evals.judge import JudgeCache, JudgeClient, JudgeSettings, VisionJudge

    model = settings.judge_model or await served_model(settings.judge)
    cache = JudgeCache(settings.out / JUDGE_CACHE)
    try:
        async with JudgeClient(JudgeSettings(base_url=settings.judge, model=model)) as client:
            yield VisionJudge(client, cache, mode=settings.judge_mode)
    finally:
        cache.close()


@dataclass(frozen=True, kw_only=True)
class _Run:
    """What every task of one invocation shares."""

    settings: EvalSettings
    runner: TaskRunner
    tools: ToolClient
    store: ImageStore
    judge: Judge | None

    async def one(self, task: SuiteTask) -> TaskResult:
        """Run one task through the agent, keep its trajectory, and score it."""
        settings = self.settings
        base_dir = settings.suite.parent if settings.suite else Path.cwd()
        handles: list[str] = []
        scenes = []
        for image in task.inputs:
            handle, scene = await materialize_input(
                self.store, image, base_dir, allow_outside=settings.allow_outside_inputs
            )
            if settings.tools.startswith(("http://", "https://")):
                handle = await self.tools.upload(self.store.read_bytes(handle))
            handles.append(handle)
            if scene is not None:
                scenes.append(scene)
        agent_task = Task(
            request=task.request, n_images=task.n_images, split=task.split, inputs=tuple(handles), id=task.id
        )
        run = await self.runner.run(
            agent_task, seed=settings.seed, record={**settings.fingerprint(), "task_id": task.id}
        )
        trajectory = run.trajectory.model_copy(update={"config": {**run.trajectory.config, "resumed": run.resumed}})
        relative = f"{TRAJECTORIES}/{record_name(task.id)}.json"
        inside(settings.out, TRAJECTORIES, f"{record_name(task.id)}.json").write_text(
            trajectory.model_dump_json(indent=1)
        )
        # Scored on the policy's own answer: a repair by the graph is not the policy's success.
        scored = (trajectory.policy_answer or []) if trajectory.answer_repaired else trajectory.answer
        verdict = await score_answer(
            task, scored, truths=trajectory.truths,
            input_scenes=scenes if len(scenes) == len(handles) else [], input_handles=handles,
            read_image=self.tools.read_image, judge=self.judge,
        )  # fmt: skip
        faults = count_faults(trajectory)
        reflections = classify_reflections(trajectory)
        unreflected, unreflected_faulty = unreflected_images(trajectory, reflections)
        return TaskResult(
            id=task.id, split=task.split, request=task.request, success=verdict.success,
            checklist_score=verdict.checklist_score, items=verdict.items, scorer=verdict.scorer,
            answer=list(trajectory.answer), answer_repaired=trajectory.answer_repaired, inputs=handles,
            termination=trajectory.termination, plan=trajectory.plan,
            reflections=reflections, judge=verdict.judge, cost=task_cost(trajectory),
            faults_injected=faults.injected, faults_caught=faults.caught, faulty_answers=faults.faulty_answers,
            unreflected=unreflected, unreflected_faulty=unreflected_faulty, trajectory=relative,
        )  # fmt: skip

    async def record(self, task: SuiteTask) -> TaskResult | TaskError:
        """Run one task; its result or error appended to the run folder before it counts as done."""
        try:
            record: TaskResult | TaskError = await self.one(task)
        except Exception as exc:  # one task's crash must not stop the others
            stage = "infrastructure" if _is_outage(exc) else "run"
            record = TaskError(id=task.id, stage=stage, message=f"{type(exc).__name__}: {exc}")
        append_jsonl(self.settings.out / (RESULTS_FILE if isinstance(record, TaskResult) else ERRORS_FILE), record)
        return record


def _is_outage(exc: BaseException) -> bool:
    """The tool server is gone (started, then lost), possibly inside an exception group."""
    if isinstance(exc, ToolServerUnavailable):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(ToolServerUnavailable) is not None


def _restart_checkpoint(out: Path, restart: bool) -> str | None:
    """Check the checkpoint database before any task runs; with ``restart``, move a corrupt one aside.

    Raises:
        CheckpointCorruptError: It is corrupt and ``restart`` is off (the message says to pass ``--restart``).

    """
    try:
        check_checkpoint(out / CHECKPOINTS)
    except CheckpointCorruptError:
        if not restart:
            raise
        moved = move_aside(out / CHECKPOINTS)
        return str(moved) if moved is not None else None
    return None


async def run_eval(
    settings: EvalSettings,
    *,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable[[TaskResult | TaskError], None] | None = None,
    restart: bool = False,
) -> EvalOutcome:
    """Run (or resume) a suite into ``settings.out``, holding the folder's lock throughout.

    Args:
        settings: What to run and where.
        on_start: Called once with (tasks to run now, tasks already done).
        on_done: Called with each task's result or error, as tasks finish.
        restart: A corrupt ``checkpoints.sqlite`` is moved aside (its half-done tasks start over;
            the results already recorded stay and are not run again) instead of raised.

    Returns:
        Counts of what this invocation did. After a tool server outage, ``infrastructure`` and
        ``not_run`` are non-zero: the same call again runs what is missing.

    Raises:
        EvalSettingsError: Bad settings, or the folder holds a run with other settings.
        SuiteError: The suite file cannot be read at all.
        FolderLockedError: Another process is writing the folder (nothing was written).
        CheckpointCorruptError: The checkpoint database is unreadable and ``restart`` is off.

    """
    with FolderLock(settings.out, what="an eval"):
        return await _run_locked(settings, on_start=on_start, on_done=on_done, restart=restart)


async def _run_locked(
    settings: EvalSettings,
    *,
    on_start: Callable[[int, int], None] | None,
    on_done: Callable[[TaskResult | TaskError], None] | None,
    restart: bool,
) -> EvalOutcome:
    _prepare(settings)
    load = load_suite_checked(settings.suite, allow_outside_inputs=settings.allow_outside_inputs)
    _record_load_errors(settings.out, load.errors)
    selected = _select(load.tasks, settings)
    done = {r.id for r in read_results(settings.out)}
    todo = [t for t in selected if t.id not in done]
    moved = _restart_checkpoint(settings.out, restart) if todo else None
    if on_start is not None:
        on_start(len(todo), len(selected) - len(todo))
    records: list[TaskResult | TaskError] = []
    if todo:
        gate = asyncio.Semaphore(settings.concurrency)
        async with (
            ToolClient(spec=settings.tool_spec()) as tools,
            _open_policy(settings, tools) as policy,
            _open_judge(settings) as judge,
            open_checkpointer(settings.out / CHECKPOINTS) as saver,
        ):
            runner = TaskRunner(policy=policy, tools=tools, config=settings.agent, checkpointer=saver)
            run = _Run(
                settings=settings, runner=runner, tools=tools, store=ImageStore(settings.out / "store"), judge=judge
            )
            lost: list[TaskError] = []

            async def one(task: SuiteTask) -> None:
                async with gate:
                    if lost:  # the tool server is gone: every task started now would fail the same way
                        return
                    record = await run.record(task)
                    records.append(record)
                    if isinstance(record, TaskError) and record.stage == "infrastructure":
                        lost.append(record)
                    if on_done is not None:
                        on_done(record)

            await asyncio.gather(*(one(t) for t in todo))
    ran = sum(isinstance(r, TaskResult) for r in records)
    outages = sum(isinstance(r, TaskError) and r.stage == "infrastructure" for r in records)
    return EvalOutcome(
        total=len(selected), loaded=len(load.tasks), skipped=len(selected) - len(todo), ran=ran,
        failed=len(records) - ran - outages, load_errors=len(load.errors), results=len(read_results(settings.out)),
        infrastructure=outages, not_run=len(todo) - len(records), checkpoint_moved_to=moved,
    )  # fmt: skip


def outcome_json(outcome: EvalOutcome) -> str:
    """The outcome as one JSON line (what the CLI prints)."""
    return json.dumps(asdict(outcome))
