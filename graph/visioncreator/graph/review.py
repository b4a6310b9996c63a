"""A person's review of each reflect turn, built on LangGraph's ``interrupt``.

With ``AgentConfig(review=True)`` the reflect node asks the policy for its turn and keeps it as
``proposed`` (a checkpointed step, so a resume never asks the policy again); the ``review`` node
then pauses the run with ``interrupt(payload)``. The payload shows each new image (handle,
``image://`` URI, a PNG thumbnail as a data URI, the call that made it, the graph's inspection) and
the policy's proposed verdict on it. ``Command(resume=...)`` answers with a :class:`ReviewDecision`:

- ``approve``: the policy's turn stands;
- ``redo`` with a note: the named images (default: every new image) are labelled ``redo`` with the
  note as their fault, and the next ``act`` turn makes them again with the review in view;
- ``revise`` with a plan: the named images are labelled ``revise`` and the reviewer's plan replaces
  the rest of the plan.

A redo or revise replaces the turn in the conversation by its reviewed version (the policy's
thinking, the reviewer's verdicts, no tool calls), so every later turn and the SFT export see
the reviewer's labels; the turn's record keeps what the policy wrote, with the
:class:`~visioncreator.graph.Review`.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visioncreator.graph.errors import GraphError
from visioncreator.graph.nodes import Nodes
from visioncreator.graph.state import AgentState, batch_records, typed
from visioncreator.graph.trajectory import Review, ToolCallRecord, TurnRecord
from visioncreator.policy import (
    ParsedTurn,
    Plan,
    PolicyTurn,
    Reflection,
    Segment,
    SegmentValue,
    Task,
    write_plan,
    write_reflect,
    write_turn,
)
from visioncreator.tool_servers import IMAGE_TOOLS, ToolServerError, decode_image

__all__ = ["RESUME_HELP", "ReviewDecision", "ReviewError", "ReviewNodes", "Reviewer", "answer_review", "reviewed_turn"]

RESUME_HELP = (
    'approve | redo <note> | revise <plan JSON>; or {"action": "approve" | "redo" | "revise", "note": "...", '
    '"images": ["img_..."], "plan": [{"step": 1, "goal": "...", "tool": "text_to_image"}], "who": "..."}'
)
"""What a review's resume value may be (shown in every review payload)."""

Reviewer = Callable[[dict[str, Any]], Any]
"""Answers a review payload (``run_task(reviewer=...)``) with a resume value: a :class:`ReviewDecision`,
its dict or a line; an async reviewer returns an awaitable of one."""

_MAX_NOTE = 2000
_PREVIEW_MAX_BYTES = 64 * 1024 * 1024
_PREVIEW_MAX_PIXELS = 64 * 1024 * 1024


class ReviewError(GraphError, ValueError):
    """A resume value that is not a review decision (the message says which part and why)."""


class ReviewDecision(BaseModel):
    """A reviewer's answer to a review: the value of ``Command(resume=...)``.

    A plain line works too: ``approve``, ``redo <note>`` or ``revise <plan JSON>`` (a JSON list of
    plan steps, as in the policy's ``<plan>``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["approve", "redo", "revise"] = Field(
        description="approve the policy's verdicts; redo the images with a note; revise the plan."
    )
    note: str = Field(default="", max_length=_MAX_NOTE, description="What to fix (required for a redo).")
    images: tuple[str, ...] | None = Field(
        default=None, description="The new images a redo or revise is about; default: every new image."
    )
    plan: Plan | None = Field(default=None, description="The new plan (required for a revise).")
    who: str = Field(default="human", min_length=1, max_length=100, description="Who reviewed.")

    @model_validator(mode="before")
    @classmethod
    def _from_line(cls, data: Any) -> Any:
        return _line_decision(data) if isinstance(data, str) else data

    @field_validator("plan", mode="before")
    @classmethod
    def _plan_steps(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"the plan is not JSON ({exc.msg} at character {exc.pos})") from exc
        return {"steps": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _complete(self) -> ReviewDecision:
        if self.action == "redo" and not self.note.strip():
            raise ValueError("a redo needs a note saying what to fix")
        if self.action == "revise" and self.plan is None:
            raise ValueError("a revise needs the new plan")
        if self.action != "revise" and self.plan is not None:
            raise ValueError(f"only a revise takes a plan, not {self.action}")
        return self

    @classmethod
    def parse(cls, value: Any) -> ReviewDecision:
        """``value`` (a decision, its dict, or a line) as a decision.

        Raises:
            ReviewError: It is none of these; the message names the field and the problem in one line.

        """
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise ReviewError(_plain(exc)) from None


async def answer_review(reviewer: Reviewer, payload: Any) -> dict[str, Any]:
    """The reviewer's answer to ``payload``, checked, as the plain resume value a checkpoint keeps.

    Raises:
        ReviewError: The answer is not a review decision.

    """
    answer = reviewer(payload)
    if inspect.isawaitable(answer):
        answer = await answer
    return ReviewDecision.parse(answer).model_dump(mode="json", exclude_none=True)


def _line_decision(line: str) -> dict[str, Any]:
    word, _, rest = line.strip().partition(" ")
    action = word.lower()
    if action == "revise":
        return {"action": action, "plan": rest.strip()}
    if action in ("approve", "redo"):
        return {"action": action, "note": rest.strip()}
    raise ValueError(f"expected approve, redo <note> or revise <plan JSON>, got {line.strip()[:80]!r}")


def _plain(exc: ValidationError) -> str:
    """A validation error as one sentence per problem, without pydantic's codes and links."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or str(exc)


def reviewed_turn(turn: PolicyTurn, decision: ReviewDecision, images: Sequence[str]) -> tuple[PolicyTurn, Review]:
    """The turn as the reviewer's decision leaves it, and the review's record.

    Args:
        turn: The policy's reflect turn.
        decision: The reviewer's answer.
        images: The new images under review, in order.

    Returns:
        For ``approve`` the turn itself; otherwise its reviewed version: the policy's ``<think>``
        segments, a ``<reflect>`` per new image (the reviewer's verdict on the named ones, the policy's
        on the others), the reviewer's plan (revise) or the policy's (redo), and no tool calls.

    """
    proposed = {r.image: r for r in turn.parsed.reflections if r.image is not None}
    if decision.action == "approve":
        verdicts = tuple(proposed[h] for h in images if h in proposed)
        return turn, Review(who=decision.who, action="approve", note=decision.note, verdicts=verdicts)
    targets = set(decision.images or images)
    faults = (decision.note.strip(),) if decision.note.strip() else ()
    labels: list[Reflection] = []
    for handle in images:
        if handle in targets:
            labels.append(Reflection(verdict=decision.action, faults=faults, image=handle))
        elif handle in proposed:
            labels.append(proposed[handle])
    parsed = turn.parsed
    parts: list[tuple[str, SegmentValue, str]] = [
        (turn.text[s.start : s.end], None, s.body) for s in parsed.segments if s.kind == "think"
    ]
    others = [r for r in parsed.reflections if r.image is None or r.image not in images]
    parts.extend((write_reflect(r), r, "") for r in (*labels, *others))
    plan = decision.plan if decision.action == "revise" else parsed.plan
    if plan is not None:
        parts.append((write_plan(plan), plan, ""))
    review = Review(who=decision.who, action=decision.action, note=decision.note, verdicts=tuple(labels), plan=plan)
    return _joined(turn, parts), review


def _joined(turn: PolicyTurn, parts: list[tuple[str, SegmentValue, str]]) -> PolicyTurn:
    """``turn`` with its text made of written segments, and those segments (their values known: nothing to parse)."""
    text = write_turn(*(written for written, _, _ in parts))
    segments: list[Segment] = []
    at = 0
    for written, value, body in parts:
        kind = written[1 : written.index(">")]
        inner = written[len(kind) + 2 : len(written) - len(kind) - 3]
        segments.append(Segment(kind=kind, start=at, end=at + len(written), body=body or inner.strip(), value=value))
        at += len(written) + 1  # write_turn puts one newline between segments
    return turn.model_copy(update={"text": text, "parsed": ParsedTurn(segments=tuple(segments))})


def _policy_turn(record: TurnRecord) -> PolicyTurn:
    """The turn a record was made of (records keep every field of a bounded turn)."""
    return PolicyTurn(
        text=record.text, parsed=ParsedTurn(segments=record.segments, errors=record.errors), model=record.model,
        prompt_token_ids=record.prompt_token_ids, completion_token_ids=record.completion_token_ids,
        logprobs=record.logprobs, latency_s=record.latency_s,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReviewNodes:
    """The reflect node of a reviewed agent (:meth:`propose`) and its ``review`` node."""

    nodes: Nodes

    async def propose(self, state: AgentState) -> dict[str, Any]:
        """Ask the policy to judge the new images; keep its turn for the review."""
        nodes = self.nodes
        since = time.perf_counter()
        stop = nodes.budget_stop(state, since)
        if stop:
            return nodes.closed(state, {"termination": stop, "pending": []}, since)
        _, record, _ = await nodes.turn("reflect", state)
        return {"proposed": record, "run_s": time.perf_counter() - since}

    async def review(self, state: AgentState) -> dict[str, Any]:
        """Pause for the reviewer (``interrupt``), then take the turn as the review leaves it."""
        # Each run of this node (the pause ends it; the answer runs it again) counts from its own start.
        since = time.perf_counter()
        nodes = self.nodes
        proposed = state.get("proposed")
        if proposed is None:
            raise GraphError("the review node ran without a proposed reflect turn")
        record = typed(TurnRecord, proposed)
        calls = _new_images(state)
        images = [c.handle for c in calls if c.handle]
        payload = await self._payload(state, record, calls)
        decision = _checked(interrupt(payload, response_schema=ReviewDecision), images)
        while isinstance(decision, str):  # a decision this review cannot take: ask again, saying why
            decision = _checked(interrupt({**payload, "error": decision}, response_schema=ReviewDecision), images)
        turn, review = reviewed_turn(_policy_turn(record), decision, images)
        new_messages = nodes.flush_observations(state)
        update = nodes.take("reflect", state, record.model_copy(update={"review": review}), turn, new_messages)
        update["proposed"] = None
        return nodes.closed(state, update, since)

    async def _payload(self, state: AgentState, record: TurnRecord, calls: list[ToolCallRecord]) -> dict[str, Any]:
        proposed = {r.image: r for r in record.parsed.reflections if r.image is not None}
        inspections = state.get("inspections", {})
        shown: list[dict[str, Any]] = []
        for call in calls:
            handle = str(call.handle)
            verdict = proposed.get(handle)
            said = None if verdict is None else {"verdict": verdict.verdict, "faults": list(verdict.faults)}
            shown.append(
                {
                    "handle": handle, "uri": f"image://{handle}", "preview": await self._preview(handle),
                    "step": call.step, "tool": call.name, "arguments": call.arguments,
                    "inspection": inspections.get(handle),
                    "proposed": said,
                }
            )  # fmt: skip
        parsed = record.parsed
        return {
            "kind": "review",
            "turn": record.index,
            "request": typed(Task, state["task"]).request,
            "images": shown,
            "proposed": {
                "text": record.text,
                "plan": None if parsed.plan is None else parsed.plan.model_dump(mode="json"),
                "tool_calls": [c.model_dump(mode="json") for c in parsed.tool_calls],
            },
            "resume": RESUME_HELP,
            "error": None,
        }

    async def _preview(self, handle: str) -> str | None:
        """A PNG thumbnail of the image as a data URI (``None`` when off or the image cannot be read)."""
        size = self.nodes.config.review_preview_px
        if size <= 0:
            return None
        try:
            data = await self.nodes.tools.read_image(handle)
        except GraphError:
            return None
        try:
            return await asyncio.to_thread(_thumbnail, data, size)
        except (ToolServerError, OSError, ValueError):
            return None


def _new_images(state: AgentState) -> list[ToolCallRecord]:
    """The policy's image calls of the latest batch that made an image."""
    records = batch_records(state.get("tool_calls", ()), state.get("batch", 0))
    return [r for r in records if r.by == "policy" and r.name in IMAGE_TOOLS and r.ok and r.handle]


def _checked(value: ReviewDecision, images: Sequence[str]) -> ReviewDecision | str:
    """The decision, or why this review cannot take it (an image that is not under review)."""
    unknown = [h for h in value.images or () if h not in images]
    if unknown:
        return f"images: {', '.join(unknown)} is not a new image of this review (new: {', '.join(images) or 'none'})"
    if value.action == "redo" and not images:
        return "there is no new image to redo: approve, or revise the plan"
    return value


def _thumbnail(data: bytes, size: int) -> str:
    image = decode_image(data, max_bytes=_PREVIEW_MAX_BYTES, max_pixels=_PREVIEW_MAX_PIXELS)
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")
