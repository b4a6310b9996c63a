"""A batch of tool calls is one checkpointed step: each call and the graph's look at its image in one task.

The look runs inside the call's task, yet a crash during the look must not repeat the finished
call: the call is a LangGraph task of its own inside the tool task, saved the moment it returns.
The crash is injected by a tool client that dies on its first ``inspect_image``; everything else
is real (the tool server with its call log, the SQLite checkpointer, a fresh agent to resume).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pytest

from visioncreator.graph import ToolClient, build_agent, open_checkpointer, run_task
from visioncreator.graph.client import ToolOutcome
from visioncreator.graph.offline import expert_policy
from visioncreator.graph.state import add_calls, typed
from visioncreator.graph.trajectory import ToolCallRecord
from visioncreator.policy import Task
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.observer import ObserverSettings

TASK = Task(request="two red apples to the left of a blue bowl")


class Died(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class LooksApart(ToolClient):
    """A real client the graph treats as a server that cannot look in the image call: it looks apart."""

    @property
    def looks_in_call(self) -> bool:
        return False

    async def call(self, name: str, arguments: Mapping[str, Any], *, look: bool = False) -> ToolOutcome:
        assert not look, "the graph asked a server that cannot look in the call to look"
        return await super().call(name, arguments)


class DiesOnFirstLook(LooksApart):
    """Dies when the graph first looks at an image (after the call that made it)."""

    looked = False

    async def call(self, name: str, arguments: Mapping[str, Any], *, look: bool = False) -> ToolOutcome:
        if name == "inspect_image" and not self.looked:
            self.looked = True
            raise Died("killed during the look")
        return await super().call(name, arguments)


class CountsCalls(ToolClient):
    """A real client that counts the calls it sends, by tool."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[str] = []

    async def call(self, name: str, arguments: Mapping[str, Any], *, look: bool = False) -> ToolOutcome:
        self.sent.append(name)
        return await super().call(name, arguments, look=look)


def _server(store: Path, log: Path) -> Any:
    settings = ServerSettings(store_root=store, call_log=log)
    return build_server(settings, backend=SyntheticBackend(SyntheticSettings(observer=ObserverSettings.exact())))


async def test_a_crash_during_the_look_never_repeats_the_finished_call(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    async with open_checkpointer(tmp_path / "cp.sqlite") as saver:
        async with DiesOnFirstLook(server=_server(tmp_path / "store", log)) as dying:
            agent = build_agent(policy=expert_policy(), tools=dying, checkpointer=saver)
            with pytest.raises(Died):
                await run_task(agent, TASK, seed=0, thread_id="t")
        made_before = [json.loads(line)["handle"] for line in log.read_text().splitlines()]
        assert len(made_before) == 1, "the call finished before the look"
        async with LooksApart(server=_server(tmp_path / "store", log)) as tools:
            agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
            resumed = await run_task(agent, TASK, seed=0, thread_id="t")
    assert resumed.resumed
    assert resumed.state["termination"] == "answered"
    made = [json.loads(line)["handle"] for line in log.read_text().splitlines()]
    assert made.count(made_before[0]) == 1, "the finished call was not made again"
    calls = resumed.trajectory.tool_calls
    first = next(c for c in calls if c.by == "policy")
    assert first.handle == made_before[0]
    assert [c.id for c in calls].count(first.id) == 1
    look = next(c for c in calls if c.by == "graph" and c.arguments.get("image") == first.handle)
    assert look.ok
    assert look.batch == first.batch
    assert first.handle in resumed.state["inspections"]


async def test_our_server_looks_in_the_image_call_one_round_trip_per_image(tmp_path: Path) -> None:
    async with (
        open_checkpointer(tmp_path / "cp.sqlite") as saver,
        CountsCalls(server=_server(tmp_path / "store", tmp_path / "calls.jsonl")) as tools,
    ):
        assert tools.looks_in_call
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
        result = await run_task(agent, TASK, seed=0, thread_id="t")
    assert result.state["termination"] == "answered"
    calls = result.trajectory.tool_calls
    made = [c for c in calls if c.by == "policy" and c.handle and c.name != "inspect_image"]
    looks = [c for c in calls if c.by == "graph" and c.name == "inspect_image"]
    assert made
    # Every new image was looked at, with no inspect_image call of the graph's on the wire.
    assert {c.arguments["image"] for c in looks} == {c.handle for c in made}
    assert all(look.ok and look.result and look.result["handle"] == look.handle for look in looks)
    assert tools.sent.count("inspect_image") == sum(c.name == "inspect_image" and c.by == "policy" for c in calls)
    for c in made:
        assert result.state["inspections"][c.handle]["known"] is True
        assert "inspection" not in (c.result or {}), "the look stays out of the call's own result"


async def test_a_batch_is_one_checkpointed_step_before_the_reflect_turn(tmp_path: Path) -> None:
    multi = Task(request="a red apple, then a blue cup, then a green pear", n_images=3, split="multi")
    async with (
        open_checkpointer(tmp_path / "cp.sqlite") as saver,
        ToolClient(server=_server(tmp_path / "store", tmp_path / "calls.jsonl")) as tools,
    ):
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
        result = await run_task(agent, multi, seed=0, thread_id="t")
        history = [s async for s in agent.aget_state_history({"configurable": {"thread_id": "t"}})]
    nexts = [s.next for s in reversed(history)]
    assert all(n[0] == "tools" for n in nexts if n and n[0] == "tools")  # a batch is one step of many tasks
    after_tools = [nexts[k + 1] for k, n in enumerate(nexts) if n and n[0] == "tools"]
    assert after_tools
    assert all(n == ("reflect",) for n in after_tools)
    # Every image of every batch was looked at before its reflect turn, in the batch it was made in.
    calls = result.trajectory.tool_calls
    for made in (c for c in calls if c.by == "policy" and c.ok and c.handle):
        looks = [c for c in calls if c.by == "graph" and c.arguments.get("image") == made.handle]
        assert [c.batch for c in looks] == [made.batch]


def _record(call_id: str, batch: int, by: Literal["policy", "graph"] = "graph") -> ToolCallRecord:
    return ToolCallRecord(id=call_id, batch=batch, turn=-1, by=by, name="inspect_image", ok=True)


def test_one_look_per_image_and_batch_is_kept() -> None:
    calls = [_record("call_1_0", 1, "policy"), _record("inspect_img_a_1", 1)]
    merged = add_calls(calls, [_record("call_1_1", 1, "policy"), _record("inspect_img_a_1", 1)])
    assert [typed(ToolCallRecord, r).id for r in merged] == ["call_1_0", "inspect_img_a_1", "call_1_1"]
    # The same image looked at in a later batch is a new look; plain dicts (a strict checkpoint) count too.
    later = add_calls(merged, [{**_record("inspect_img_a_1", 2).model_dump()}])
    assert len(later) == 4
