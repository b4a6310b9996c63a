"""The graph's state: typed records, handles and small values, with LangGraph reducers.

The state holds pydantic objects (the task, messages, turn and tool-call records, the plan), so
a node reads them as they are and a policy turn's own cost does not grow with the conversation.
A checkpointer whose serializer does not allow these types (LangGraph's strict msgpack mode with
another allowlist) gives them back as plain dicts: :func:`typed` accepts both.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict

from visioncreator.graph.trajectory import ToolCallRecord, TurnRecord
from visioncreator.policy import Message, Plan, Task, ToolCall

__all__ = [
    "AgentInput",
    "AgentOutput",
    "AgentState",
    "Look",
    "PendingCall",
    "ToolTask",
    "add_calls",
    "batch_records",
    "longest",
    "merge",
    "running_s",
    "typed",
    "typed_list",
]

M = TypeVar("M", bound=BaseModel)


def merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer that merges dicts, right winning."""
    return {**(left or {}), **(right or {})}


def longest(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    """Reducer of ``batch_s``: per key, the longest time (parallel tasks of one batch overlap)."""
    out = dict(left or {})
    for key, seconds in (right or {}).items():
        out[key] = max(seconds, out.get(key, 0.0))
    return out


_Record = ToolCallRecord | Mapping[str, Any]


def add_calls(left: Sequence[_Record] | None, right: Sequence[_Record] | None) -> list[_Record]:
    """Reducer of ``tool_calls``: appends, but keeps one graph look per image and batch.

    Each tool task looks at its own image; two calls of one batch that make the same image (the
    same prompt and seed) would both record a look with the same id. The first one stays.
    """
    out = list(left or ())
    for record in right or ():
        if _field(record, "by") == "graph" and _recorded(out, record):
            continue
        out.append(record)
    return out


def _field(record: _Record, key: str) -> Any:
    return record[key] if isinstance(record, Mapping) else getattr(record, key)


def _recorded(records: Sequence[_Record], record: _Record) -> bool:
    """Whether ``record``'s id is among the records of its batch at the end of ``records``."""
    batch, record_id = _field(record, "batch"), _field(record, "id")
    for earlier in reversed(records):
        if _field(earlier, "batch") != batch:
            return False
        if _field(earlier, "id") == record_id:
            return True
    return False


def running_s(state: Mapping[str, Any], since: float) -> float:
    """A task's running time: its finished steps, its tool batches and the step running since ``since``.

    Each tool batch counts as its longest task; ``since`` is a ``time.perf_counter()`` of this step's
    start. Pauses between steps (a person's review, a crash before its resume) are not in it.
    """
    batches: Mapping[str, float] = state.get("batch_s") or {}
    ran = float(state.get("run_s") or 0.0) + sum(float(s) for s in batches.values())
    return ran + time.perf_counter() - since


def typed(model: type[M], value: M | Mapping[str, Any]) -> M:
    """``value`` as a ``model``: itself when it is one, else validated (a checkpoint may hold plain dicts)."""
    return value if isinstance(value, model) else model.model_validate(value)


def typed_list(model: type[M], values: Iterable[M | Mapping[str, Any]]) -> list[M]:
    """Each of ``values`` as a ``model`` (only plain dicts are validated)."""
    return [typed(model, v) for v in values]


def batch_records(records: Sequence[ToolCallRecord | Mapping[str, Any]], batch: int) -> list[ToolCallRecord]:
    """The tool-call records of ``batch``, in order.

    A batch's records (its calls, then the graph's looks at their images) are the last ones
    appended, so the scan runs back from the end and stops at the batch before: its cost is the
    batch's size, not the conversation's.
    """
    found: list[ToolCallRecord] = []
    for raw in reversed(records):
        record = typed(ToolCallRecord, raw)
        if record.batch != batch:
            break
        found.append(record)
    found.reverse()
    return found


class PendingCall(BaseModel):
    """A tool call the policy asked for and the graph admitted, waiting for the ``tools`` step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    call: ToolCall
    """The call, with the id the graph gave it."""
    turn: int
    """Index of the policy turn that asked for it."""


class ToolTask(TypedDict):
    """What one ``tools`` task runs (sent with ``Send``: one task per call, and its look at the image)."""

    call: PendingCall
    batch: int


class Look(TypedDict):
    """What one ``inspect`` task looks at: an image, on the policy's behalf."""

    handle: str
    batch: int


class AgentInput(TypedDict, total=False):
    """What a caller gives the agent."""

    task: Task
    """The task (a :class:`visioncreator.policy.Task`, or its JSON as a dict)."""
    seed: int
    """Seed of the run: policy sampling and tool seeds derive from it."""
    call_seed_base: int
    """Base of the image calls' seeds (default: derived from the task and ``seed``); runs given the
    same base meet the same tool randomness (see :mod:`visioncreator.graph.seeds`)."""


class AgentOutput(TypedDict, total=False):
    """What the agent gives back."""

    answer: list[str]
    """The answer's image handles, in order."""
    answer_repaired: bool
    """The answer is the graph's repair of a missing or invalid one, not the policy's."""
    termination: str
    """Why the run ended: ``answered``, a budget (``budget_turns``...), ``format_errors``, ``no_answer``..."""
    task: Task


class AgentState(TypedDict, total=False):
    """The full state of one task."""

    task: Task
    seed: int
    call_seed_base: int
    """Base of the image calls' seeds (see :mod:`visioncreator.graph.seeds`)."""
    messages: Annotated[list[Message], operator.add]
    turns: Annotated[list[TurnRecord], operator.add]
    tool_calls: Annotated[list[ToolCallRecord], add_calls]
    inspections: Annotated[dict[str, Any], merge]
    """handle -> inspect_image output (or {"error": ...}) from the graph's own looks."""
    pending: list[PendingCall]
    """Tool calls to run in the next ``tools`` step."""
    batch: int
    """Id of the latest batch of tool calls."""
    shown_batch: int
    """Latest batch whose observations were put into the conversation."""
    plan: Plan | None
    step_calls: dict[str, int]
    """Plan step (as a string) -> policy calls made for it (the first is the attempt, the rest redos)."""
    policy_tool_calls: int
    format_retries: int
    answer: list[str] | None
    policy_answer: list[str] | None
    """The answer exactly as the policy wrote it (``None``: it wrote none)."""
    answer_repaired: bool
    """``answer`` is not the policy's: the graph dropped unknown handles or filled a missing answer."""
    termination: str | None
    started_at: float
    run_s: Annotated[float, operator.add]
    """Running time of the finished policy and review steps (what the wall-time budget counts)."""
    batch_s: Annotated[dict[str, float], longest]
    """Batch (as a string) -> its longest tool task's running time."""
    proposed: TurnRecord | None
    """With ``AgentConfig.review``: the reflect turn waiting for its review."""
