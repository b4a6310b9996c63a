"""Trajectory records: parsed values kept and read back; version-1 files read; typed state through checkpoints."""

from __future__ import annotations

from pathlib import Path

import anyio

from tests.graph.conftest import make_client
from visioncreator.graph import (
    SCHEMA_VERSION,
    TaskRunner,
    ToolCallRecord,
    Trajectory,
    TurnRecord,
    expert_policy,
    open_checkpointer,
)
from visioncreator.policy import Message, Plan, Reflection, Task, ToolCall

V1 = Path(__file__).parent / "data" / "trajectory_v1.json"
"""Written by the version-1 code (``visioncreator run "two red apples to the left of a blue bowl" --fault-rate
1.0 --seed 3``): its turns kept their segments' spans and bodies but not their parsed values."""


def test_a_version_1_file_reads_with_every_segment_value_filled() -> None:
    old = Trajectory.model_validate_json(V1.read_text())
    assert old.schema_version == SCHEMA_VERSION == 2
    reflect_turns = [t for t in old.turns if t.node == "reflect"]
    assert reflect_turns
    verdicts = [r.verdict for t in reflect_turns for r in t.parsed.reflections]
    assert verdicts[0] == "redo"
    assert "accept" in verdicts
    assert isinstance(old.turns[0].parsed.plan, Plan)
    assert all(isinstance(s.value, ToolCall) for t in old.turns for s in t.segments if s.kind == "tool_call")
    assert isinstance(old.task, Task)
    assert all(isinstance(m, Message) for m in old.messages)


async def test_records_round_trip_through_json_with_their_values(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store", fault_rate=1.0) as tools:
        with anyio.fail_after(60):
            trajectory = (
                await TaskRunner(policy=expert_policy(), tools=tools).run(Task(request="a red fox"))
            ).trajectory
    back = Trajectory.model_validate_json(trajectory.model_dump_json())
    assert back == trajectory
    values = [s.value for t in back.turns for s in t.segments if s.kind == "reflect"]
    assert values
    assert all(isinstance(v, Reflection) for v in values)


async def test_state_resumed_from_sqlite_holds_typed_records(tmp_path: Path) -> None:
    task = Task(request="two green cups next to a red vase")
    async with make_client(tmp_path / "store") as tools, open_checkpointer(tmp_path / "cp.sqlite") as saver:
        runner = TaskRunner(policy=expert_policy(), tools=tools, checkpointer=saver)
        with anyio.fail_after(60):
            first = await runner.run(task)
        # A second runner over the same file reads the finished thread back from SQLite.
        again = await TaskRunner(policy=expert_policy(), tools=tools, checkpointer=saver).run(task)
    assert again.resumed
    state = again.state
    assert isinstance(state["task"], Task)
    assert state["turns"]
    assert all(isinstance(t, TurnRecord) for t in state["turns"])
    assert state["tool_calls"]
    assert all(isinstance(c, ToolCallRecord) for c in state["tool_calls"])
    assert all(isinstance(m, Message) for m in state["messages"])
    assert again.trajectory.turns == first.trajectory.turns
