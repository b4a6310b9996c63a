"""The agent for sync code: ``invoke`` and ``stream`` with a sync SQLite checkpointer.

The agent's nodes have both forms (see :func:`~visioncreator.graph.build_agent`): under
``invoke``/``stream`` each node's coroutine runs on the event loop that owns the tool session and
the policy. :func:`open_agent_sync` makes that loop (a daemon thread), opens the tool server and
the policy on it, and compiles the agent with a :class:`~langgraph.checkpoint.sqlite.SqliteSaver`;
:func:`open_checkpointer_sync` is that checkpointer alone, and :func:`run_task_sync` the sync
twin of :func:`~visioncreator.graph.run_task`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from visioncreator.graph.builder import Agent, build_agent
from visioncreator.graph.client import ToolClient
from visioncreator.graph.config import AgentConfig, Durability
from visioncreator.graph.connection import ToolServerSpec
from visioncreator.graph.folder import checkpoint_file
from visioncreator.graph.loop import LoopThread
from visioncreator.graph.policies import open_policy
from visioncreator.graph.recover import reroute_sync, rerouted_sync
from visioncreator.graph.runner import STATE_TYPES, EventHandler, RunResult, Synchronous, thread_id_for
from visioncreator.graph.state import AgentInput
from visioncreator.graph.trajectory import build_trajectory
from visioncreator.policy import Policy, Task

__all__ = ["open_agent_sync", "open_checkpointer_sync", "run_task_sync"]


@contextmanager
def open_checkpointer_sync(
    path: str | Path | None, *, synchronous: Synchronous = "NORMAL"
) -> Iterator[BaseCheckpointSaver[Any]]:
    """A sync SQLite checkpointer at ``path``, or an in-memory one for ``None`` / ``":memory:"``.

    The sync twin of :func:`~visioncreator.graph.open_checkpointer`: the same serializer allowlist
    (:data:`~visioncreator.graph.STATE_TYPES`), write-ahead log and ``synchronous`` setting, for
    ``invoke``/``stream`` (LangGraph's ``SqliteSaver`` has no async methods: async code uses
    ``open_checkpointer``).
    """
    file = checkpoint_file(path, synchronous)
    serde = JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)
    if file is None:
        yield InMemorySaver(serde=serde)
        return
    # LangGraph's sync runner writes from its worker threads; the saver serializes them with its lock.
    conn = sqlite3.connect(str(file), check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        conn.close()
        raise
    saver = SqliteSaver(conn, serde=serde)
    try:
        yield saver
    finally:
        with saver.lock:  # no write is half done when the connection closes
            conn.close()


@contextmanager
def open_agent_sync(
    *,
    tools: ToolServerSpec | None = None,
    server: Any = None,
    policy: str | Policy = "expert",
    config: AgentConfig | None = None,
    checkpoint: str | Path | None = None,
    synchronous: Synchronous = "NORMAL",
    seed: int = 0,
) -> Iterator[Agent]:
    """The compiled agent for sync code, with its tool server, policy and checkpointer open.

    Example:
        with open_agent_sync(tools=ToolServerSpec.synthetic(store="store"), checkpoint="cp.sqlite") as agent:
            out = agent.invoke({"task": task, "seed": 0}, {"configurable": {"thread_id": "t1"}})

    Args:
        tools: How to reach the tool server (default: spawn the bundled synthetic server).
        server: An in-process ``MCPServer`` instead (tests, embedding).
        policy: A policy, or what :func:`~visioncreator.graph.open_policy` opens (``expert``, a URL,
            a model directory), opened on the agent's loop.
        config: The agent's configuration.
        checkpoint: The SQLite file of the ``SqliteSaver`` (``None``: in memory).
        synchronous: SQLite's ``PRAGMA synchronous`` (see :func:`open_checkpointer_sync`).
        seed: Seed of a policy opened from a string.

    Yields:
        The agent: ``invoke``/``stream`` run its nodes on a loop of its own in a daemon thread, which
        holds the tool session and the policy until the block ends.

    """
    with LoopThread() as loop, open_checkpointer_sync(checkpoint, synchronous=synchronous) as saver:
        stack = AsyncExitStack()
        try:
            client = loop.run(stack.enter_async_context(ToolClient(spec=tools, server=server)))
            chosen = (
                loop.run(stack.enter_async_context(open_policy(policy, tools=client, seed=seed)))
                if isinstance(policy, str)
                else policy
            )
            yield build_agent(policy=chosen, tools=client, config=config, checkpointer=saver)
        finally:
            loop.run(stack.aclose())


def run_task_sync(
    agent: Agent,
    task: Task,
    *,
    seed: int = 0,
    thread_id: str | None = None,
    on_event: EventHandler | None = None,
    recursion_limit: int = 400,
    durability: Durability = "async",
) -> RunResult:
    """Run ``task`` to the end with ``stream``, resuming its thread (:func:`~visioncreator.graph.run_task`, sync).

    Args:
        agent: From :func:`open_agent_sync` (or any agent whose checkpointer has sync methods).
        task: The task.
        seed: Seed of the run.
        thread_id: Checkpoint thread; defaults to :func:`~visioncreator.graph.thread_id_for`.
        on_event: Called with every progress event.
        recursion_limit: LangGraph super-step limit.
        durability: When LangGraph saves each step.

    """
    tid = thread_id or thread_id_for(task, seed)
    config: RunnableConfig = {"configurable": {"thread_id": tid}, "recursion_limit": recursion_limit}
    started = time.perf_counter()
    run_input: AgentInput | None = {"task": task, "seed": seed}
    resumed = False
    if agent.checkpointer is not None:
        snapshot = agent.get_state(config)
        if snapshot.values:
            finished = not snapshot.next and not snapshot.tasks
            if finished and not reroute_sync(agent, config, snapshot):  # visioncreator.graph.recover
                return _result(tid, dict(snapshot.values), resumed=True, wall_s=0.0)
            resumed, run_input = True, None
            if on_event:
                on_event({"event": "resume", "thread_id": tid, "next": list(snapshot.next)})
    values: dict[str, Any] = {}
    saving: dict[str, Any] = {"durability": durability} if agent.checkpointer is not None else {}
    for _ in range(4):  # a stream, then up to 3 lost routes followed (visioncreator.graph.recover)
        for mode, chunk in agent.stream(run_input, config, stream_mode=["custom", "values"], **saving):
            if mode == "custom" and on_event is not None and isinstance(chunk, dict):
                on_event(chunk)
            elif mode == "values" and isinstance(chunk, dict):
                values = chunk
        if agent.checkpointer is None or not rerouted_sync(agent, config, values):
            break
        run_input = None
    return _result(tid, values, resumed=resumed, wall_s=time.perf_counter() - started)


def _result(thread_id: str, state: dict[str, Any], *, resumed: bool, wall_s: float) -> RunResult:
    trajectory = build_trajectory(state, thread_id=thread_id, wall_s=wall_s)
    return RunResult(thread_id, state, resumed=resumed, wall_s=wall_s, trajectory=trajectory)
