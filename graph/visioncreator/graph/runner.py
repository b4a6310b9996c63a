"""Run one task through the compiled agent, with checkpoints, resume and progress events."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.state import CompiledStateGraph

from visioncreator.graph.state import AgentInput, AgentOutput, AgentState
from visioncreator.policy import Task

EventHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished (or resumed-and-finished) task."""

    thread_id: str
    state: dict[str, Any]
    """The final graph state (answer, termination, turns, tool_calls, messages...)."""
    resumed: bool
    """True when this run continued a checkpointed one."""
    wall_s: float


def thread_id_for(task: Task, seed: int) -> str:
    """A deterministic thread id: re-running the same task and seed resumes it."""
    digest = hashlib.sha256(f"{task.model_dump_json()}|{seed}".encode()).hexdigest()
    return f"task_{digest[:16]}"


@asynccontextmanager
async def open_checkpointer(path: str | Path | None) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """A SQLite checkpointer at ``path``, or an in-memory one for ``None`` / ``":memory:"``."""
    if path is None or str(path) == ":memory:":
        yield InMemorySaver()
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        yield saver


async def run_task(
    agent: CompiledStateGraph[AgentState, None, AgentInput, AgentOutput],
    task: Task,
    *,
    seed: int = 0,
    thread_id: str | None = None,
    on_event: EventHandler | None = None,
    recursion_limit: int = 400,
) -> RunResult:
    """Run ``task`` to the end, resuming the thread's checkpoint if it stopped midway.

    Args:
        agent: From :func:`visioncreator.graph.build_agent`, compiled with a checkpointer for resume.
        task: The task.
        seed: Seed of the run.
        thread_id: Checkpoint thread; defaults to :func:`thread_id_for` (same task + seed, same thread).
        on_event: Called with every progress event (``{"event": "turn" | "tool_start" | ...}``).
        recursion_limit: LangGraph super-step limit.

    """
    tid = thread_id or thread_id_for(task, seed)
    config: RunnableConfig = {"configurable": {"thread_id": tid}, "recursion_limit": recursion_limit}
    started = time.perf_counter()
    resumed = False
    run_input: AgentInput | None = {"task": task.model_dump(mode="json"), "seed": seed}
    if agent.checkpointer is not None:
        snapshot = await agent.aget_state(config)
        if snapshot.values:
            # Finished means nothing left to run AND no saved writes waiting: a crash between a step's
            # writes and its checkpoint leaves `next` empty with the step's tasks still pending.
            if not snapshot.next and not snapshot.tasks:
                return RunResult(tid, dict(snapshot.values), resumed=True, wall_s=0.0)
            resumed = True
            run_input = None
            if on_event:
                on_event({"event": "resume", "thread_id": tid, "next": list(snapshot.next)})
    values: dict[str, Any] = {}
    async for mode, chunk in agent.astream(run_input, config, stream_mode=["custom", "values"]):
        if mode == "custom" and on_event is not None and isinstance(chunk, dict):
            on_event(chunk)
        elif mode == "values" and isinstance(chunk, dict):
            values = chunk
    if agent.checkpointer is not None:
        values = dict((await agent.aget_state(config)).values)
    return RunResult(tid, values, resumed=resumed, wall_s=time.perf_counter() - started)
