"""The trajectory record of one task: every turn, segment, tool call, handle and timing."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


def _package_version() -> str:
    try:
        return version("visioncreator")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


class Timings(BaseModel):
    """Where the wall time went."""

    wall_s: float = Field(description="Whole task, as the runner measured it.")
    policy_s: float = Field(description="Sum of policy turn latencies.")
    tools_s: float = Field(description="Sum of tool call round trips (policy and graph calls).")


class Trajectory(BaseModel):
    """One task's full record, as written to ``trajectory.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    visioncreator: str = Field(default_factory=_package_version)
    thread_id: str
    seed: int
    task: dict[str, Any]
    config: dict[str, Any] = Field(default_factory=dict)
    messages: list[dict[str, Any]]
    turns: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    plan: dict[str, Any] | None = None
    answer: list[str]
    termination: str
    timings: Timings
    truths: dict[str, Any] = Field(
        default_factory=dict, description="handle -> synthetic ground truth (scene, faults) when the server has it."
    )


def image_handles(state: dict[str, Any]) -> list[str]:
    """Every image handle the task saw or made, in order of first appearance."""
    handles: dict[str, None] = dict.fromkeys(state.get("task", {}).get("inputs", ()))
    for record in state.get("tool_calls", []):
        if record.get("ok") and record.get("handle"):
            handles.setdefault(record["handle"])
    return list(handles)


def build_trajectory(
    state: dict[str, Any],
    *,
    thread_id: str,
    wall_s: float,
    truths: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Trajectory:
    """Make the record from a finished graph state."""
    turns = list(state.get("turns", []))
    calls = list(state.get("tool_calls", []))
    return Trajectory(
        thread_id=thread_id,
        seed=int(state.get("seed") or 0),
        task=dict(state.get("task", {})),
        config=config or {},
        messages=list(state.get("messages", [])),
        turns=turns,
        tool_calls=calls,
        plan=state.get("plan"),
        answer=list(state.get("answer") or []),
        termination=str(state.get("termination") or "unknown"),
        timings=Timings(
            wall_s=wall_s,
            policy_s=sum(float(t.get("latency_s", 0.0)) for t in turns),
            tools_s=sum(float(c.get("latency_s", 0.0)) for c in calls),
        ),
        truths=truths or {},
    )
