"""Sync and async: ``invoke``/``stream`` with ``SqliteSaver`` run a task as ``ainvoke``/``astream`` do.

``AsyncSqliteSaver`` serves the async runs, and sync ones too from another thread than its loop.

Everything is real: the bundled synthetic tool server spawned over stdio (or in-process where a
client must be swapped), the expert policy, SQLite checkpoint files. The same task and seed give
the same images whichever way the agent is driven.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from tests.graph.conftest import make_client
from tests.graph.test_tool_step import LooksApart, _server
from visioncreator.graph import (
    ToolClient,
    ToolServerSpec,
    build_agent,
    open_agent_sync,
    open_checkpointer,
    open_checkpointer_sync,
    run_task_sync,
)
from visioncreator.graph.loop import LoopThread
from visioncreator.graph.offline import expert_policy
from visioncreator.policy import Task

TASK = Task(request="two red apples to the left of a blue bowl")
MULTI = Task(request="a red apple, then a blue cup, then a green pear", n_images=3, split="multi")
CONFIG: RunnableConfig = {"configurable": {"thread_id": "t"}, "recursion_limit": 200}


def _spec(tmp_path: Path) -> ToolServerSpec:
    return ToolServerSpec.synthetic(store=tmp_path / "store", fault_rate=0.3)


@pytest.mark.timeout(120)
def test_invoke_and_stream_with_sqlite_saver_run_a_task_to_its_answer(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp.sqlite"
    with open_agent_sync(tools=_spec(tmp_path), checkpoint=checkpoint) as agent:
        assert isinstance(agent.checkpointer, SqliteSaver)
        out = agent.invoke({"task": TASK, "seed": 0}, CONFIG)
        assert out["termination"] == "answered"
        assert len(out["answer"]) == 1
        assert out["answer"][0].startswith("img_")
        history = list(agent.get_state_history(CONFIG))
        assert len(history) > 3
        assert not history[0].next
        modes: dict[str, int] = {}
        for mode, _ in agent.stream(
            {"task": MULTI, "seed": 0}, {"configurable": {"thread_id": "m"}}, stream_mode=["custom", "updates"]
        ):
            modes[mode] = modes.get(mode, 0) + 1
        assert modes["custom"] > 5
        assert modes["updates"] > 3
        multi = agent.get_state({"configurable": {"thread_id": "m"}}).values
        assert multi["termination"] == "answered"
        assert len(multi["answer"]) == 3
    # The file holds the finished threads: another sync agent finds them done.
    with open_agent_sync(tools=_spec(tmp_path), checkpoint=checkpoint) as agent:
        again = run_task_sync(agent, TASK, seed=0, thread_id="t")
        assert again.resumed
        assert again.wall_s == 0.0
        assert again.state["answer"] == out["answer"]


@pytest.mark.timeout(120)
async def test_sync_and_async_runs_of_a_task_make_the_same_images(tmp_path: Path) -> None:
    async with open_checkpointer(tmp_path / "async.sqlite") as saver, ToolClient(spec=_spec(tmp_path)) as tools:
        assert isinstance(saver, AsyncSqliteSaver)
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
        async_out = await agent.ainvoke({"task": MULTI, "seed": 3}, CONFIG)
        streamed = [c async for c in agent.astream({"task": TASK, "seed": 3}, {"configurable": {"thread_id": "s"}})]
        assert streamed
    events: list[dict[str, Any]] = []

    def sync_run() -> Any:
        with open_agent_sync(tools=_spec(tmp_path), checkpoint=tmp_path / "sync.sqlite") as agent:
            return run_task_sync(agent, MULTI, seed=3, thread_id="t", on_event=events.append)

    sync = await asyncio.wait_for(asyncio.to_thread(sync_run), 100)
    assert async_out["termination"] == sync.state["termination"] == "answered"
    assert async_out["answer"] == sync.state["answer"]
    assert [t.text for t in async_out_turns(tmp_path)] == [t.text for t in sync.trajectory.turns]
    assert {e["event"] for e in events} >= {"turn", "tool_start", "tool_end", "reflect"}


def async_out_turns(tmp_path: Path) -> list[Any]:
    """The turns of the async run, read back from its SQLite file with the sync saver."""
    with open_checkpointer_sync(tmp_path / "async.sqlite") as saver:
        state = saver.get_tuple(CONFIG)
    assert state is not None
    return list(state.checkpoint["channel_values"]["turns"])


@pytest.mark.timeout(120)
def test_invoke_with_async_sqlite_saver_opened_on_the_agents_loop(tmp_path: Path) -> None:
    with LoopThread() as loop:
        stack_saver = open_checkpointer(tmp_path / "cp.sqlite")
        saver = loop.run(stack_saver.__aenter__())
        tools = loop.run(make_client(tmp_path / "store").__aenter__())
        try:
            agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
            out = agent.invoke({"task": TASK, "seed": 0}, CONFIG)
            assert out["termination"] == "answered"
            assert agent.get_state(CONFIG).values["answer"] == out["answer"]
        finally:
            loop.run(tools.__aexit__(None, None, None))
            loop.run(stack_saver.__aexit__(None, None, None))


@pytest.mark.timeout(120)
def test_a_sync_run_against_a_server_that_looks_apart_saves_the_call_as_its_own_task(tmp_path: Path) -> None:
    with LoopThread() as loop, open_checkpointer_sync(tmp_path / "cp.sqlite") as saver:
        tools = loop.run(LooksApart(server=_server(tmp_path / "store", tmp_path / "calls.jsonl")).__aenter__())
        try:
            agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
            result = run_task_sync(agent, TASK, seed=0, thread_id="t")
        finally:
            loop.run(tools.__aexit__(None, None, None))
    assert result.state["termination"] == "answered"
    calls = result.trajectory.tool_calls
    made = [c for c in calls if c.by == "policy" and c.handle and c.name != "inspect_image"]
    looks = [c for c in calls if c.by == "graph" and c.name == "inspect_image"]
    assert made
    assert {c.arguments["image"] for c in looks} == {c.handle for c in made}
    # Each call ran as a LangGraph task inside its tools task, its record saved as that task's return value.
    with open_checkpointer_sync(tmp_path / "cp.sqlite") as reader:
        returns = reader.conn.execute("SELECT COUNT(*) FROM writes WHERE channel = '__return__'").fetchone()[0]
    assert returns == len(made)


async def test_the_tool_client_serves_calls_from_another_loop_and_thread(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:

        def elsewhere() -> Any:
            return asyncio.run(tools.call("text_to_image", {"prompt": "a red apple", "seed": 1}))

        outcome = await asyncio.wait_for(asyncio.to_thread(elsewhere), 30)
        assert outcome.ok
        assert str(outcome.structured and outcome.structured["handle"]).startswith("img_")
        here = await tools.call("text_to_image", {"prompt": "a red apple", "seed": 1})
        assert here.structured
        assert outcome.structured
        assert here.structured["handle"] == outcome.structured["handle"]


async def test_invoke_on_the_tools_own_loop_is_refused_not_a_deadlock(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        agent = build_agent(policy=expert_policy(), tools=tools)
        with pytest.raises(RuntimeError, match="use ainvoke/astream"):
            agent.invoke({"task": TASK, "seed": 0})


def test_a_closed_agent_says_so(tmp_path: Path) -> None:
    with open_agent_sync(server=_server(tmp_path / "store", tmp_path / "calls.jsonl")) as agent:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        agent.invoke({"task": TASK, "seed": 0}, CONFIG)


@pytest.mark.timeout(120)
def test_sync_stream_in_messages_mode_yields_each_turn_tagged_with_its_node(tmp_path: Path) -> None:
    with open_agent_sync(tools=_spec(tmp_path), checkpoint=tmp_path / "cp.sqlite") as agent:
        streamed: dict[str, str] = {}
        nodes: dict[str, str] = {}
        for chunk, meta in agent.stream({"task": TASK, "seed": 0}, CONFIG, stream_mode="messages"):
            assert chunk.id is not None
            streamed[chunk.id] = streamed.get(chunk.id, "") + str(chunk.content)
            nodes[chunk.id] = meta["langgraph_node"]
        turns = agent.get_state(CONFIG).values["turns"]
    assert [t.node for t in turns] == list(nodes.values())
    assert [t.text for t in turns] == list(streamed.values())
