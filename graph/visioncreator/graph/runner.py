"""From a task to its trajectory: the one path the CLI, the eval runner and the RL collector all take.

:class:`TaskRunner` runs a task through a compiled agent to a :class:`~visioncreator.graph.Trajectory`:
it resumes the task's checkpoint thread if a run stopped midway (:func:`thread_id_for` names the
thread), reads the synthetic ground truth of every image the task saw or made, and times the
run. A tool server lost mid-task is reconnected (a spawned one restarted) and the task resumed
from its checkpoint, a few times, before the loss is raised. :func:`run_task` is the graph-level
step underneath, for apps that only want the final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command

from visioncreator.graph.branch import BranchPoint, branch_points, fork
from visioncreator.graph.builder import Agent, build_agent
from visioncreator.graph.client import ToolClient
from visioncreator.graph.config import AgentConfig, Durability
from visioncreator.graph.connection import ToolServerSpec
from visioncreator.graph.errors import ToolServerLost, ToolServerUnavailable
from visioncreator.graph.folder import checkpoint_file
from visioncreator.graph.recover import reroute, rerouted
from visioncreator.graph.review import ReviewDecision, Reviewer, answer_review
from visioncreator.graph.state import AgentInput, PendingCall
from visioncreator.graph.trajectory import (
    Branch,
    Review,
    ToolCallRecord,
    Trajectory,
    TurnRecord,
    build_trajectory,
    image_handles,
)
from visioncreator.policy import (
    Answer,
    FormatError,
    Message,
    Plan,
    PlanStep,
    Policy,
    Reflection,
    Segment,
    Task,
    ToolCall,
)

__all__ = [
    "STATE_TYPES",
    "EventHandler",
    "RunResult",
    "Synchronous",
    "TaskRunner",
    "open_checkpointer",
    "run_task",
    "thread_id_for",
]

Synchronous = Literal["NORMAL", "FULL"]
"""SQLite's ``PRAGMA synchronous`` for a checkpoint file (see :func:`open_checkpointer`)."""

EventHandler = Callable[[dict[str, Any]], None]

STATE_TYPES: frozenset[tuple[str, str]] = frozenset(
    (cls.__module__, cls.__name__)
    for cls in (
        Task, Message, Plan, PlanStep, ToolCall, Reflection, Answer, Segment, FormatError, TurnRecord, ToolCallRecord,
        PendingCall, Review, ReviewDecision,
    )
)  # fmt: skip
"""The state's pydantic types as ``(module, name)``: ``JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)``."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished (or resumed-and-finished) task."""

    thread_id: str
    state: dict[str, Any]
    """The final graph state (answer, termination, turns, tool_calls, messages...)."""
    resumed: bool
    """True when this run continued a checkpointed one (or found it already finished)."""
    wall_s: float
    """Seconds this call took (0 when the thread had already finished)."""
    trajectory: Trajectory
    """The task's record (with ground truths and settings when the run went through :class:`TaskRunner`)."""
    interrupts: tuple[Any, ...] = ()
    """The payloads of the reviews the run is paused at (no reviewer given); else empty (also at a breakpoint)."""


def thread_id_for(task: Task, seed: int, *scope: object) -> str:
    """The checkpoint thread of a task: the same task, seed and scope resume the same thread.

    Args:
        task: The task (its JSON, id and inputs included, is part of the id).
        seed: Seed of the run.
        *scope: Whatever else tells runs of the same task apart (the RL collector: the sample index,
            tool seed, policy and task context).

    Returns:
        ``traj_`` and 16 hex digits of a SHA-256: the trajectory id everywhere (CLI, evals, RL records).

    """
    parts = [task.model_dump_json(), str(seed), *map(str, scope)]
    return "traj_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


@asynccontextmanager
async def open_checkpointer(
    path: str | Path | None, *, synchronous: Synchronous = "NORMAL"
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """A SQLite checkpointer at ``path``, or an in-memory one for ``None`` / ``":memory:"``.

    Its serializer allows exactly the state's own types (:data:`STATE_TYPES`) besides LangGraph's.
    An existing file that is not a readable SQLite database raises
    :class:`~visioncreator.graph.folder.CheckpointCorruptError`.

    Args:
        path: The SQLite file (made with its folder if missing), or ``None`` / ``":memory:"``.
        synchronous: SQLite's ``PRAGMA synchronous`` on the write-ahead log. ``NORMAL`` (default):
            every commit is in the log file when it returns, without waiting for the disk, so
            every saved step survives the process being killed; a power loss or OS crash can lose
            the steps since the log's last sync (the file stays consistent, and the run resumes from
            an earlier step, repeating the calls after it). ``FULL``: each commit waits for the disk
            (fsync), so saved steps survive a power loss too, at a disk flush per step.
    """
    file = checkpoint_file(path, synchronous)
    serde = JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)
    if file is None:
        yield InMemorySaver(serde=serde)
        return
    import aiosqlite

    conn = await aiosqlite.connect(str(file))
    saver = AsyncSqliteSaver(conn, serde=serde)
    try:
        # WAL is what AsyncSqliteSaver.setup() sets too; set here so that `synchronous` means the
        # same thing from the first commit on.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={synchronous}")
        yield saver
    finally:
        # A run cancelled mid-write can leave LangGraph's background checkpoint writes still queued
        # on this connection, and a write cancelled between its statement and its commit leaves the
        # transaction open: the next opener of the file would find it locked. Every saver write
        # holds `saver.lock`: take it, so that no write is half done, roll back what is uncommitted
        # and close while holding it (a write still waiting for the lock then fails on the closed
        # connection instead of reopening a transaction).
        async with saver.lock:
            with contextlib.suppress(Exception):
                await conn.rollback()
            with contextlib.suppress(Exception):
                await conn.close()


async def run_task(
    agent: Agent,
    task: Task,
    *,
    seed: int = 0,
    thread_id: str | None = None,
    on_event: EventHandler | None = None,
    recursion_limit: int = 400,
    call_seed_base: int | None = None,
    durability: Durability = "async",
    reviewer: Reviewer | None = None,
) -> RunResult:
    """Run ``task`` to the end, resuming the thread's checkpoint if it stopped midway.

    Args:
        agent: From :func:`visioncreator.graph.build_agent`, compiled with a checkpointer for resume.
        task: The task.
        seed: Seed of the run.
        thread_id: Checkpoint thread; defaults to :func:`thread_id_for` (same task + seed, same thread).
        on_event: Called with every progress event (``{"event": "turn" | "tool_start" | ...}``).
        recursion_limit: LangGraph super-step limit.
        call_seed_base: Base of the image calls' seeds (see :mod:`visioncreator.graph.seeds`); default
            derived from the task and ``seed``.
        durability: When LangGraph saves each step (see :attr:`AgentConfig.durability`).
        reviewer: Answers each review of an agent built with ``AgentConfig(review=True)``; without one
            the run returns paused, its :attr:`RunResult.interrupts` holding the review, and a
            ``Command(resume=...)`` (or this function with a reviewer) continues it.

    Raises:
        ReviewError: The reviewer's answer is not a :class:`~visioncreator.graph.ReviewDecision`.

    """
    tid = thread_id or thread_id_for(task, seed)
    config: RunnableConfig = {"configurable": {"thread_id": tid}, "recursion_limit": recursion_limit}
    started = time.perf_counter()
    resumed = False
    first: AgentInput = {"task": task, "seed": seed}
    if call_seed_base is not None:
        first["call_seed_base"] = call_seed_base
    run_input: AgentInput | None = first
    if agent.checkpointer is not None:
        snapshot = await agent.aget_state(config)
        if snapshot.values:
            # Finished means nothing left to run AND no saved writes waiting: a crash between a step's
            # writes and its checkpoint leaves `next` empty with the step's tasks still pending.
            finished = not snapshot.next and not snapshot.tasks
            if on_event:
                on_event({
                    "event": "resume", "thread_id": tid, "next": list(snapshot.next), "finished": finished,
                    "step": (snapshot.metadata or {}).get("step"), "turns": len(snapshot.values.get("turns", ())),
                    "tool_calls": len(snapshot.values.get("tool_calls", ())),
                })  # fmt: skip
            if finished and not await reroute(agent, config, snapshot, on_event):  # visioncreator.graph.recover
                return _result(tid, dict(snapshot.values), resumed=True, wall_s=0.0)
            resumed, run_input = True, None
    values: dict[str, Any] = {}
    # LangGraph refuses a durability without a checkpointer (there is nothing to save).
    saving: dict[str, Any] = {"durability": durability} if agent.checkpointer is not None else {}
    paused: tuple[Any, ...] = ()
    reroutes = 0
    stream_input: AgentInput | Command[Any] | None = run_input
    while True:
        stream = agent.astream(stream_input, config, stream_mode=["custom", "values"], **saving)
        async for mode, chunk in stream:
            if mode == "custom" and on_event is not None and isinstance(chunk, dict):
                on_event(chunk)
            elif mode == "values" and isinstance(chunk, dict):
                # The last one is the final state (no second read of the checkpoint), or the paused one.
                paused = tuple(i.value for i in chunk.get("__interrupt__", ()))
                values = {k: v for k, v in chunk.items() if k != "__interrupt__"}
        if paused and reviewer is not None:
            stream_input = Command(resume=await answer_review(reviewer, paused[0]))
        elif reroutes < 3 and agent.checkpointer is not None and await rerouted(agent, config, values, on_event):
            reroutes, stream_input = reroutes + 1, None  # saved writes without their route were applied
        else:
            break
    if not values and agent.checkpointer is not None:
        values = dict((await agent.aget_state(config)).values)
    return _result(tid, values, resumed=resumed, wall_s=time.perf_counter() - started, interrupts=paused)


def _result(
    thread_id: str, state: dict[str, Any], *, resumed: bool, wall_s: float, interrupts: tuple[Any, ...] = ()
) -> RunResult:
    trajectory = build_trajectory(state, thread_id=thread_id, wall_s=wall_s)
    return RunResult(thread_id, state, resumed=resumed, wall_s=wall_s, trajectory=trajectory, interrupts=interrupts)


class TaskRunner:
    """Runs tasks to trajectories through one compiled agent: checkpoints and resume, truths, timings.

    Args:
        policy: Writes every turn.
        tools: A connected tool client (the agent's tools, and where ground truths are read).
        config: The agent's configuration.
        checkpointer: Where state is saved after each step (``None``: no resume).

    """

    def __init__(
        self,
        *,
        policy: Policy,
        tools: ToolClient,
        config: AgentConfig | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
    ) -> None:
        self.tools = tools
        self.config = config or AgentConfig()
        self.agent = build_agent(policy=policy, tools=tools, config=self.config, checkpointer=checkpointer)

    async def run(
        self,
        task: Task,
        *,
        seed: int = 0,
        scope: Sequence[object] = (),
        thread_id: str | None = None,
        on_event: EventHandler | None = None,
        record: Mapping[str, Any] | None = None,
        call_seed_base: int | None = None,
        reviewer: Reviewer | None = None,
    ) -> RunResult:
        """Run (or resume, or find finished) ``task``; the result carries its trajectory.

        Args:
            task: The task.
            seed: Seed of the run.
            scope: More parts of the thread id (see :func:`thread_id_for`).
            thread_id: The checkpoint thread itself, instead of one derived from task, seed and scope.
            on_event: Progress events, as :func:`run_task` gives them.
            record: What the trajectory keeps as its ``config`` (the settings that shaped it).
            call_seed_base: Base of the image calls' seeds; runs given the same base (and
                ``AgentConfig.call_seeds="derived"``) meet the same tool randomness. Default: derived
                from the task and ``seed``.
            reviewer: Answers each review (``AgentConfig.review``), as :func:`run_task` takes it.

        """
        tid = thread_id or thread_id_for(task, seed, *scope)

        async def attempt() -> RunResult:
            result = await run_task(
                self.agent, task, seed=seed, thread_id=tid, on_event=on_event,
                recursion_limit=self.config.recursion_limit, call_seed_base=call_seed_base,
                durability=self.config.durability, reviewer=reviewer,
            )  # fmt: skip
            return await self._recorded(result, record)

        return await self._through_outages(attempt, on_event)

    async def branch(
        self,
        point: BranchPoint,
        *,
        seed: int,
        thread_id: str,
        on_event: EventHandler | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Run one continuation of a base run from a checkpoint (see :mod:`visioncreator.graph.branch`).

        Args:
            point: A checkpoint of the base thread, from :meth:`branch_points`.
            seed: The continuation's run seed (what the policy samples with); all else is the base's.
            thread_id: The continuation's own checkpoint thread (a re-run resumes it).
            on_event: Progress events, as :func:`run_task` gives them.
            record: What the trajectory keeps as its ``config``.

        Returns:
            The result; its trajectory holds the base's turns before ``point.turn`` and its ``branch``.

        """
        await fork(self.agent, point, thread_id, seed=seed)
        base = point.values["task"]
        where = Branch(
            thread_id=str(point.config["configurable"]["thread_id"]), checkpoint_id=point.checkpoint_id,
            node=point.node, turn=point.turn,
        )  # fmt: skip

        async def attempt() -> RunResult:
            result = await run_task(
                self.agent, base, seed=seed, thread_id=thread_id, on_event=on_event,
                recursion_limit=self.config.recursion_limit, durability=self.config.durability,
            )  # fmt: skip
            result = dataclasses.replace(result, trajectory=result.trajectory.model_copy(update={"branch": where}))
            return await self._recorded(result, record)

        return await self._through_outages(attempt, on_event)

    async def _through_outages(
        self, attempt: Callable[[], Awaitable[RunResult]], on_event: EventHandler | None
    ) -> RunResult:
        """``attempt()``; when the tool server is lost, reconnect and resume from the checkpoint.

        A lost server raises out of the graph before the step that needed it is checkpointed, so
        the resumed run redoes exactly the calls that were in flight (the siblings that finished are
        saved as pending writes). Without a checkpointer a resume would start over: the loss is
        raised at once. After ``ToolServerSpec.reconnects`` reconnects the loss is raised.
        """
        spec = self.tools.spec or ToolServerSpec()
        reconnects = spec.reconnects if self.agent.checkpointer is not None else 0
        for tries in range(reconnects + 1):
            try:
                return await attempt()
            except ToolServerLost as exc:
                if tries == reconnects:
                    raise
                lost = exc
            if on_event is not None:
                on_event({"event": "tool_server_lost", "error": str(lost), "reconnect": tries + 1, "of": reconnects})
            await asyncio.sleep(spec.outage_backoff_s * 2**tries)
            with contextlib.suppress(ToolServerUnavailable):  # still down: the next attempt says so
                await self.tools.reconnect(lost.generation)
        raise AssertionError("unreachable")  # pragma: no cover

    async def branch_points(self, thread_id: str, node: str = "reflect") -> list[BranchPoint]:
        """The checkpoints of a finished base thread where ``node`` runs next, oldest first."""
        return await branch_points(self.agent, thread_id, node)

    async def _recorded(self, result: RunResult, record: Mapping[str, Any] | None) -> RunResult:
        """The result with its trajectory's ground truths and settings."""
        trajectory = result.trajectory
        truths: dict[str, Any] = {}
        for handle in image_handles(trajectory.task, trajectory.tool_calls):
            truth = await self.tools.read_truth(handle)
            if truth is not None:
                truths[handle] = truth
        trajectory = trajectory.model_copy(update={"truths": truths, "config": dict(record or {})})
        return dataclasses.replace(result, trajectory=trajectory)
