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
    config: Mapping[str, Any] | None = None,
) -> Trajectory:
    """A finished trajectory of ``turns`` and ``calls`` (a one-image task unless ``task`` is given).

    ``config`` is what the record keeps of the run's settings (e.g. ``{"reflect": False}``).
    """
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
        config=dict(config or {}),
    )


def image_call(
    turn: int,
    handle: str | None,
    *,
    call_id: str | None = None,
    batch: int | None = None,
    step: int | None = 1,
    ok: bool = True,
    name: str = "text_to_image",
) -> ToolCallRecord:
    """The record of one image call the policy wrote at ``turn`` (its batch defaults to ``turn + 1``).

    A failed call (``ok=False``) made no image: its handle is dropped.
    """
    return ToolCallRecord(
        id=call_id or f"call_{turn}_{handle or 'failed'}",
        batch=turn + 1 if batch is None else batch,
        turn=turn,
        by="policy",
        name=name,
        arguments={"prompt": "a test task"},
        step=step,
        ok=ok,
        result={"handle": handle} if ok else None,
        error=None if ok else "backend failed",
        handle=handle if ok else None,
    )
