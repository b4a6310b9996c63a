"""Hand-made trajectories for tests: turns parsed once, as the graph records them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from visioncreator.graph import Timings, ToolCallRecord, Trajectory, TurnRecord
from visioncreator.policy import Node, Task, parse_turn


def turn_record(index: int, node: Node, text: str, **fields: Any) -> TurnRecord:
    """The record the graph keeps of a turn that wrote ``text`` (its segments parsed, with their values)."""
    parsed = parse_turn(text)
    return TurnRecord(index=index, node=node, text=text, segments=parsed.segments, errors=parsed.errors, **fields)


def trajectory(
    turns: Iterable[TurnRecord],
    calls: Iterable[ToolCallRecord | Mapping[str, Any]] = (),
    *,
    task: Task | None = None,
    answer: Iterable[str] = (),
    truths: Mapping[str, Any] | None = None,
) -> Trajectory:
    """A finished trajectory of ``turns`` and ``calls`` (a one-image task unless ``task`` is given)."""
    return Trajectory(
        thread_id="t",
        seed=0,
        task=task or Task(request="a test task"),
        messages=[],
        turns=list(turns),
        tool_calls=[ToolCallRecord.model_validate(c) for c in calls],
        answer=list(answer),
        termination="answered",
        timings=Timings(wall_s=1.0, policy_s=0.5, tools_s=0.5),
        truths=dict(truths or {}),
    )
