"""The trajectory record of one task: every turn (with its parsed segments), tool call, handle and timing.

Turns keep the values their segments parsed into (plans, tool calls, reflections, answers), so
rewards, scorers, the reflection analysis and the reports read values and never parse text again.
The graph's state holds the same record types (:class:`TurnRecord`, :class:`ToolCallRecord`).
Schema version 2 added the values; a version-1 record (``schema_version`` 1, segments without
values) is read by parsing each turn's text once, on load.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from visioncreator.policy import (
    FormatError,
    Message,
    Node,
    ParsedTurn,
    Plan,
    PolicyTurn,
    Reflection,
    Segment,
    Task,
    parse_turn,
)
from visioncreator.tool_servers import IMAGE_TOOLS

__all__ = [
    "SCHEMA_VERSION",
    "Branch",
    "Review",
    "Timings",
    "ToolCallRecord",
    "Trajectory",
    "TurnRecord",
    "build_trajectory",
    "image_handles",
]

SCHEMA_VERSION = 2
"""Version 2: turns keep their segments' parsed values; task, messages and plan are typed."""


@functools.cache
def _package_version() -> str:
    # importlib.metadata reads the installed distributions (milliseconds): once per process.
    try:
        return version("visioncreator")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Review(_Record):
    """A person's review of a reflect turn: the reflection labels that supersede the policy's verdicts."""

    who: str = Field(default="human", description="Who reviewed (a person's name or role).")
    action: Literal["approve", "redo", "revise"] = Field(description="What the reviewer answered.")
    note: str = Field(default="", description="The reviewer's note (what to fix, for a redo or revise).")
    verdicts: tuple[Reflection, ...] = Field(
        default=(),
        description="The label of each new image: the reviewer's verdict, or the policy's where the reviewer "
        "approved it. Training prefers these to the policy's own.",
    )
    plan: Plan | None = Field(default=None, description="The reviewer's plan (revise).")


class TurnRecord(_Record):
    """One policy turn: what the policy wrote, what it parsed into, and what it cost."""

    index: int = Field(description="Position among the task's policy turns (0-based).")
    node: Node
    text: str
    segments: tuple[Segment, ...] = Field(default=(), description="The tagged segments, with their parsed values.")
    errors: tuple[FormatError, ...] = Field(default=(), description="Format errors of the turn.")
    model: str = ""
    latency_s: float = 0.0
    started_at: float = 0.0
    n_messages: int = Field(default=0, description="How many messages the policy saw (a prefix: by reference).")
    prompt_token_ids: tuple[int, ...] | None = None
    completion_token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None
    review: Review | None = Field(
        default=None,
        description="A person's review of this (reflect) turn; the conversation then holds the reviewed turn, "
        "while ``text`` stays what the policy wrote.",
    )

    @property
    def parsed(self) -> ParsedTurn:
        """The turn as the parser gave it (plans, calls, reflections and answer as values)."""
        return ParsedTurn(segments=self.segments, errors=self.errors)

    @classmethod
    def of(cls, turn: PolicyTurn, *, index: int, node: Node, started_at: float, n_messages: int) -> TurnRecord:
        """The record of a policy's turn."""
        return cls(
            index=index,
            node=node,
            text=turn.text,
            segments=turn.parsed.segments,
            errors=turn.parsed.errors,
            model=turn.model,
            latency_s=turn.latency_s,
            started_at=started_at,
            n_messages=n_messages,
            prompt_token_ids=turn.prompt_token_ids,
            completion_token_ids=turn.completion_token_ids,
            logprobs=turn.logprobs,
        )


class ToolCallRecord(_Record):
    """One executed tool call, made by the policy or by the graph itself."""

    id: str
    batch: int = Field(description="The batch of calls it ran in (0: the graph's looks at the task's inputs).")
    turn: int = Field(description="Index of the policy turn that asked for it; -1 for the graph's own calls.")
    by: Literal["policy", "graph"]
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    step: int | None = None
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    handle: str | None = None
    latency_s: float = 0.0
    started_at: float = 0.0


class Timings(BaseModel):
    """Where the wall time went."""

    wall_s: float = Field(description="Whole task, as the runner measured it.")
    policy_s: float = Field(description="Sum of policy turn latencies.")
    tools_s: float = Field(description="Sum of tool call round trips (policy and graph calls).")


class Branch(BaseModel):
    """Where a branched trajectory left its base (kept in the trajectory record)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thread_id: str = Field(description="The base run's checkpoint thread.")
    checkpoint_id: str = Field(description="The base checkpoint the continuation was copied from.")
    node: str = Field(description="The node that came next at that checkpoint (e.g. reflect).")
    turn: int = Field(description="Index of the continuation's first policy turn: turns before it are the base's.")


class Trajectory(BaseModel):
    """One task's full record, as written to ``trajectory.json`` and kept by eval runs and RL records."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    visioncreator: str = Field(default_factory=_package_version)
    thread_id: str
    seed: int
    call_seed_base: int | None = Field(
        default=None, description="Base of the image calls' seeds (visioncreator.graph.seeds); None in old records."
    )
    task: Task
    config: dict[str, Any] = Field(default_factory=dict)
    messages: list[Message]
    turns: list[TurnRecord]
    tool_calls: list[ToolCallRecord]
    plan: Plan | None = None
    answer: list[str]
    policy_answer: list[str] | None = Field(
        default=None, description="The answer exactly as the policy wrote it; None when it wrote none."
    )
    answer_repaired: bool = Field(
        default=False,
        description="The answer is the graph's repair (unknown handles dropped, or the latest images filled in "
        "for a missing or invalid answer), not the policy's: rewards and scores give it no credit.",
    )
    termination: str
    timings: Timings
    truths: dict[str, Any] = Field(
        default_factory=dict, description="handle -> synthetic ground truth (scene, faults) when the server has it."
    )
    branch: Branch | None = Field(
        default=None, description="Where this run was forked from a base run's checkpoint (branched rollouts)."
    )

    @model_validator(mode="before")
    @classmethod
    def _read_version_1(cls, data: Any) -> Any:
        """A version-1 record kept no segment values: parse each turn's text once, here, to fill them."""
        if not isinstance(data, dict) or data.get("schema_version", SCHEMA_VERSION) != 1:
            return data
        turns = []
        for turn in data.get("turns") or ():
            parsed = parse_turn(str(turn.get("text", "")))
            turns.append({**turn, "segments": parsed.segments, "errors": parsed.errors})
        return {**data, "turns": turns, "schema_version": SCHEMA_VERSION}

    def images_made(self, *, by: Literal["policy", "graph"] | None = None) -> list[ToolCallRecord]:
        """The successful image-making calls (of ``by`` only, when given), in order."""
        return [
            c for c in self.tool_calls if c.ok and c.handle and c.name in IMAGE_TOOLS and (by is None or c.by == by)
        ]


def image_handles(task: Task, tool_calls: Sequence[ToolCallRecord]) -> list[str]:
    """Every image handle a task saw or made (its inputs, then the calls' results), in order of first appearance."""
    handles: dict[str, None] = dict.fromkeys(task.inputs)
    for record in tool_calls:
        if record.ok and record.handle:
            handles.setdefault(record.handle)
    return list(handles)


def build_trajectory(
    state: Mapping[str, Any],
    *,
    thread_id: str,
    wall_s: float,
    truths: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Trajectory:
    """Make the record from a finished graph state (its values typed, or plain as a checkpoint may give them)."""
    # model_validate hands a record back as it is; only plain dicts (from some checkpointers) are validated.
    turns = [TurnRecord.model_validate(t) for t in state.get("turns", ())]
    calls = [ToolCallRecord.model_validate(c) for c in state.get("tool_calls", ())]
    return Trajectory(
        thread_id=thread_id,
        seed=int(state.get("seed") or 0),
        call_seed_base=None if state.get("call_seed_base") is None else int(state["call_seed_base"]),
        task=state["task"],
        config=dict(config or {}),
        messages=list(state.get("messages", ())),
        turns=turns,
        tool_calls=calls,
        plan=state.get("plan"),
        answer=list(state.get("answer") or []),
        policy_answer=None if state.get("policy_answer") is None else list(state["policy_answer"]),
        answer_repaired=bool(state.get("answer_repaired", False)),
        termination=str(state.get("termination") or "unknown"),
        timings=Timings(
            wall_s=wall_s,
            policy_s=sum(t.latency_s for t in turns),
            tools_s=sum(c.latency_s for c in calls),
        ),
        truths=dict(truths or {}),
    )
