"""The graph's state: handles and small values only, with LangGraph reducers."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict


def merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer that merges dicts, right winning."""
    return {**(left or {}), **(right or {})}


class TurnRecord(TypedDict):
    """One policy turn."""

    index: int
    node: str
    text: str
    segments: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    model: str
    latency_s: float
    started_at: float
    n_messages: int
    """How many messages of the conversation the policy saw (a prefix: messages by reference)."""
    prompt_token_ids: list[int] | None
    completion_token_ids: list[int] | None
    logprobs: list[float] | None


class ToolCallRecord(TypedDict):
    """One executed tool call, made by the policy or by the graph itself."""

    id: str
    batch: int
    turn: int
    """Index of the policy turn that asked for it; -1 for the graph's own calls."""
    by: Literal["policy", "graph"]
    name: str
    arguments: dict[str, Any]
    step: int | None
    ok: bool
    result: dict[str, Any] | None
    error: str | None
    handle: str | None
    latency_s: float
    started_at: float


class AgentInput(TypedDict, total=False):
    """What a caller gives the agent."""

    task: dict[str, Any]
    """A :class:`visioncreator.policy.Task` as a dict."""
    seed: int
    """Seed of the run: policy sampling and tool seeds derive from it."""


class AgentOutput(TypedDict, total=False):
    """What the agent gives back."""

    answer: list[str]
    termination: str
    task: dict[str, Any]


class AgentState(TypedDict, total=False):
    """The full state of one task."""

    task: dict[str, Any]
    seed: int
    messages: Annotated[list[dict[str, Any]], operator.add]
    turns: Annotated[list[TurnRecord], operator.add]
    tool_calls: Annotated[list[ToolCallRecord], operator.add]
    inspections: Annotated[dict[str, Any], merge]
    """handle -> inspect_image output (or {"error": ...}) from the graph's own looks."""
    pending: list[dict[str, Any]]
    """Tool calls to run in the next ``tools`` step."""
    batch: int
    """Id of the latest batch of tool calls."""
    shown_batch: int
    """Latest batch whose observations were put into the conversation."""
    plan: dict[str, Any] | None
    step_calls: dict[str, int]
    """Plan step (as a string) -> policy calls made for it (the first is the attempt, the rest redos)."""
    policy_tool_calls: int
    format_retries: int
    answer: list[str] | None
    termination: str | None
    started_at: float
