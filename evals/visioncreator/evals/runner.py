"""Run a suite through the agent into a run folder: concurrent, resumable, scored, costed.

A run folder (see :mod:`visioncreator.evals.results`) is the whole state of a run. Running again
with the same folder skips every task id already in ``results.jsonl`` (nothing is re-scored), and
a task that was killed mid-trajectory continues from ``checkpoints.sqlite`` (its thread id comes
from the task id and the seed), so the tool calls it finished are not made again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

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
)
from visioncreator.evals.scoring import Judge, count_faults, score_answer
from visioncreator.evals.suites import SuiteTask, load_suite_checked, materialize_input
from visioncreator.graph import (
    AgentConfig,
    ToolClient,
    ToolServerSpec,
    Trajectory,
    build_agent,
    build_trajectory,
    image_handles,
    open_checkpointer,
    run_task,
)
from visioncreator.policy import ExpertConfig, Policy, Task
from visioncreator.tool_servers import IMAGE_TOOLS, ImageStore

__all__ = ["EvalOutcome", "EvalSettings", "run_eval", "task_cost", "thread_id"]

BACKENDS = ("synthetic", "tiny", "diffusers")
TRAJECTORIES = "trajectories"
CHECKPOINTS = "checkpoints.sqlite"
JUDGE_CACHE = "judge_cache.sqlite"


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """How to run a suite (the ``visioncreator eval`` flags)."""

    out: Path
    """Run folder."""
    suite: Path | None = None
    """Suite file (JSONL); ``None`` is the built-in synthetic suite."""
    policy: str = "expert"
    """``expert``, an OpenAI-compatible base URL, or a local model directory."""
    tools: str = "synthetic"
    """Tool back end to spawn (``synthetic``, ``tiny``, ``diffusers``) or a streamable HTTP URL."""
    concurrency: int = 4
    """Tasks in flight at once."""
    fault_rate: float = 0.0
    """Synthetic fault injection rate of a spawned server."""
    seed: int = 0
    """Seed of every task's run."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """Graph configuration (reflection on or off, budgets)."""
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    """Error rates of the expert policy (its seed is ``seed``)."""
    splits: tuple[str, ...] = ()
    """Only these splits (empty: all)."""
    limit: int | None = None
    """Only the first ``limit`` tasks (after the split filter)."""
    model: str | None = None
    """Served model name for a URL policy."""
    max_tokens: int = 1024
    """Most tokens per turn of a URL or local policy."""
    judge: str | None = None
    """OpenAI-compatible base URL of a vision judge."""
    judge_model: str | None = None
    """Model name on the judge server (default: its first)."""
    judge_mode: Literal["image", "text"] = "image"
    """``image`` sends the images (a vision model); ``text`` sends inspect_image's description of each."""
    label: str = ""
    """A name for the run in reports."""
    tool_latency: float = 0.0
    """Simulated seconds per generated image of a spawned server (for load and resume tests)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise EvalSettingsError(f"concurrency must be at least 1, got {self.concurrency}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise EvalSettingsError(f"fault rate must be in [0, 1], got {self.fault_rate}")
        if self.limit is not None and self.limit < 0:
            raise EvalSettingsError(f"limit must not be negative, got {self.limit}")
        if self.tools not in BACKENDS and not self.tools.startswith(("http://", "https://")):
            raise EvalSettingsError(f"--tools {self.tools!r}: expected {', '.join(BACKENDS)} or an http(s):// URL")

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {
            "suite": str(self.suite) if self.suite else "builtin:synthetic",
            "policy": self.policy,
            "tools": self.tools,
            "fault_rate": self.fault_rate,
            "seed": self.seed,
            "reflect": self.agent.reflect,
            "observe": self.agent.observe,
            "budgets": self.agent.budgets.as_dict(),
            "expert": {k: v for k, v in asdict(self.expert).items() if k != "seed"} if self.policy == "expert" else {},
            "judge": self.judge,
            "judge_model": self.judge_model,
            "judge_mode": self.judge_mode if self.judge else None,
        }


@dataclass(frozen=True)
class EvalOutcome:
    """What one invocation did."""

    total: int
    """Tasks selected from the suite (after the split filter and limit)."""
    skipped: int
    """Already in ``results.jsonl`` (not run, not re-scored)."""
    ran: int
    """Run and scored now."""
    failed: int
    """Crashed now (recorded in ``errors.jsonl``)."""
    load_errors: int
    """Suite lines that did not load."""
    results: int
    """Results in the folder after the run."""


def thread_id(task_id: str, seed: int) -> str:
    """The checkpoint thread of a task in a run: the same task and seed resume the same thread."""
    return f"eval:{task_id}:{seed}"


def task_cost(trajectory: Trajectory, wall_s: float | None = None) -> TaskCost:
    """What a task cost, from its trajectory (token counts only where turns kept their token ids)."""
    turns, calls = trajectory.turns, trajectory.tool_calls
    return TaskCost(
        policy_calls=len(turns),
        prompt_tokens=sum(len(t.get("prompt_token_ids") or ()) for t in turns),
        completion_tokens=sum(len(t.get("completion_token_ids") or ()) for t in turns),
        tool_calls=len(calls),
        generator_s=sum(float(c.get("latency_s", 0.0)) for c in calls if c.get("name") in IMAGE_TOOLS),
        policy_s=trajectory.timings.policy_s,
        wall_s=trajectory.timings.wall_s if wall_s is None else wall_s,
    )


def _append(path: Path, record: BaseModel) -> None:
    """Append one JSON line in one write and make it durable before the task counts as done."""
    with path.open("ab", buffering=0) as f:
        f.write((record.model_dump_json() + "\n").encode())
        os.fsync(f.fileno())


def _drop_torn_line(path: Path) -> None:
    """Cut a last line a killed process left without its newline (that task simply runs again)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _safe_name(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", task_id)[:120] or "task"


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
    _drop_torn_line(out / RESULTS_FILE)
    _drop_torn_line(out / ERRORS_FILE)
    path = out / RUN_FILE
    wanted = settings.fingerprint()
    if path.exists():
        before = RunInfo.model_validate_json(path.read_text()).settings
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
    path = out / ERRORS_FILE
    seen = set(path.read_text().splitlines()) if path.exists() else set()
    for error in errors:
        if error.model_dump_json() not in seen:
            _append(path, error)


def _select(tasks: Sequence[SuiteTask], settings: EvalSettings) -> list[SuiteTask]:
    chosen = [t for t in tasks if not settings.splits or t.split in settings.splits]
    return chosen if settings.limit is None else chosen[: settings.limit]


def _tool_spec(settings: EvalSettings) -> ToolServerSpec:
    if settings.tools.startswith(("http://", "https://")):
        return ToolServerSpec(url=settings.tools, token=os.environ.get("VISIONCREATOR_TOKEN"))
    extra = ["--backend", settings.tools]
    if settings.tool_latency:
        extra += ["--latency", str(settings.tool_latency)]
    return ToolServerSpec.synthetic(store=str(settings.out / "store"), fault_rate=settings.fault_rate, extra_args=extra)


@asynccontextmanager
async def _open_policy(settings: EvalSettings, tools: ToolClient) -> AsyncIterator[Policy]:
    if settings.policy == "expert":
        from dataclasses import replace

        from visioncreator.graph import expert_policy

        yield expert_policy(replace(settings.expert, seed=settings.seed))
        return
    from visioncreator.graph import open_policy

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
    from visioncreator.graph import served_model

    model = settings.judge_model or await served_model(settings.judge)
    cache = JudgeCache(settings.out / JUDGE_CACHE)
    try:
        async with JudgeClient(JudgeSettings(base_url=settings.judge, model=model)) as client:
            yield VisionJudge(client, cache, mode=settings.judge_mode)
    finally:
        cache.close()


def _write_trajectory(out: Path, task_id: str, trajectory: Trajectory) -> str:
    relative = f"{TRAJECTORIES}/{_safe_name(task_id)}.json"
    (out / relative).write_text(trajectory.model_dump_json(indent=1))
    return relative


async def _run_one(
    task: SuiteTask, settings: EvalSettings, *, agent: Any, tools: ToolClient, store: ImageStore,
    judge: Judge | None,
) -> TaskResult:  # fmt: skip
    base_dir = settings.suite.parent if settings.suite else Path.cwd()
    handles: list[str] = []
    scenes = []
    for image in task.inputs:
        handle, scene = await materialize_input(store, image, base_dir)
        if settings.tools.startswith(("http://", "https://")):
            handle = await tools.upload(store.read_bytes(handle))
        handles.append(handle)
        if scene is not None:
            scenes.append(scene)
    agent_task = Task(request=task.request, n_images=task.n_images, split=task.split, inputs=tuple(handles), id=task.id)
    started = time.perf_counter()
    run = await run_task(
        agent, agent_task, seed=settings.seed, thread_id=thread_id(task.id, settings.seed),
        recursion_limit=settings.agent.recursion_limit,
    )  # fmt: skip
    truths: dict[str, Any] = {}
    for handle in image_handles(run.state):
        truth = await tools.read_truth(handle)
        if truth is not None:
            truths[handle] = truth
    trajectory = build_trajectory(
        run.state, thread_id=run.thread_id, wall_s=run.wall_s, truths=truths,
        config={**settings.fingerprint(), "task_id": task.id, "resumed": run.resumed},
    )  # fmt: skip
    relative = _write_trajectory(settings.out, task.id, trajectory)
    answer = trajectory.answer
    verdict = await score_answer(
        task, answer, truths=truths, input_scenes=scenes if len(scenes) == len(handles) else [],
        input_handles=handles, read_image=tools.read_image, judge=judge,
    )  # fmt: skip
    faults = count_faults(answer, truths, trajectory.turns, trajectory.tool_calls)
    reflections = classify_reflections(trajectory.turns, truths)
    unreflected, unreflected_faulty = unreflected_images(trajectory.tool_calls, reflections, truths)
    return TaskResult(
        id=task.id, split=task.split, request=task.request, success=verdict.success,
        checklist_score=verdict.checklist_score, items=verdict.items, scorer=verdict.scorer, answer=list(answer),
        inputs=handles, termination=trajectory.termination, plan=trajectory.plan, reflections=reflections,
        judge=verdict.judge, cost=task_cost(trajectory, time.perf_counter() - started if run.resumed else None),
        faults_injected=faults.injected, faults_caught=faults.caught, faulty_answers=faults.faulty_answers,
        unreflected=unreflected, unreflected_faulty=unreflected_faulty, trajectory=relative,
    )  # fmt: skip


async def run_eval(
    settings: EvalSettings,
    *,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable[[TaskResult | TaskError], None] | None = None,
) -> EvalOutcome:
    """Run (or resume) a suite into ``settings.out``.

    Args:
        settings: What to run and where.
        on_start: Called once with (tasks to run now, tasks already done).
        on_done: Called with each task's result or error, as tasks finish.

    Returns:
        Counts of what this invocation did.

    Raises:
        EvalSettingsError: Bad settings, or the folder holds a run with other settings.
        SuiteError: The suite file cannot be read at all.
    """
    _prepare(settings)
    load = load_suite_checked(settings.suite)
    _record_load_errors(settings.out, load.errors)
    selected = _select(load.tasks, settings)
    done = {r.id for r in read_results(settings.out)}
    todo = [t for t in selected if t.id not in done]
    if on_start is not None:
        on_start(len(todo), len(selected) - len(todo))
    ran = failed = 0
    if todo:
        store = ImageStore(settings.out / "store")
        gate = asyncio.Semaphore(settings.concurrency)
        async with (
            ToolClient(spec=_tool_spec(settings)) as tools,
            _open_policy(settings, tools) as policy,
            _open_judge(settings) as judge,
            open_checkpointer(settings.out / CHECKPOINTS) as saver,
        ):
            agent = build_agent(policy=policy, tools=tools, config=settings.agent, checkpointer=saver)

            async def one(task: SuiteTask) -> None:
                nonlocal ran, failed
                async with gate:
                    try:
                        record: TaskResult | TaskError = await _run_one(
                            task, settings, agent=agent, tools=tools, store=store, judge=judge
                        )
                    except Exception as exc:  # one task's crash must not stop the others
                        record = TaskError(id=task.id, stage="run", message=f"{type(exc).__name__}: {exc}")
                    if isinstance(record, TaskResult):
                        _append(settings.out / RESULTS_FILE, record)
                        ran += 1
                    else:
                        _append(settings.out / ERRORS_FILE, record)
                        failed += 1
                    if on_done is not None:
                        on_done(record)

            await asyncio.gather(*(one(t) for t in todo))
    return EvalOutcome(
        total=len(selected), skipped=len(selected) - len(todo), ran=ran, failed=failed,
        load_errors=len(load.errors), results=len(read_results(settings.out)),
    )  # fmt: skip


def outcome_json(outcome: EvalOutcome) -> str:
    """The outcome as one JSON line (what the CLI prints)."""
    return json.dumps(asdict(outcome))
