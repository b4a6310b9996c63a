"""Scripted adversaries: the expert, except for one thing each does to chase a reward without the work.

Each adversary wraps the scripted expert (:class:`~visioncreator.policy.ExpertPolicy`) and
rewrites what it writes at one node. Where an adversary skips or blurs its reflections, the
expert underneath is shown the conversation as if it had accepted every new image by name, so
the rest of the run goes on as well as it can (plans, calls, a right-sized answer): the reward
then has only the reflect turns to tell the two apart, the hardest case for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from visioncreator.policy import (
    Answer,
    ExpertPolicy,
    Message,
    Observation,
    Plan,
    PolicyRequest,
    PolicyTurn,
    Reflection,
    ScriptedPolicy,
    ToolCall,
    parse_observations,
    parse_task,
    write_answer,
    write_plan,
    write_reflect,
    write_think,
    write_tool_call,
    write_turn,
)
from visioncreator.tool_servers import IMAGE_TOOLS

__all__ = [
    "ADVERSARIES",
    "AcceptAllNamed",
    "AcceptAllUnnamed",
    "Adversary",
    "CopiedPlan",
    "EmptyReflections",
    "EndlessRedo",
    "MissingReflections",
    "NoToolCalls",
    "RejectAll",
    "StuffedAnswer",
]

_MADE_UP_FAULT = "the image does not match the request"


def _new_images(messages: Sequence[Message]) -> list[Observation]:
    """The image calls of the latest tool message (what a reflect turn has to judge), in order."""
    for message in reversed(messages):
        if message.role == "tool":
            return [o for o in parse_observations(message) if o.name in IMAGE_TOOLS]
    return []


def _handle(obs: Observation) -> str | None:
    handle = (obs.result or {}).get("handle") if obs.ok else None
    return handle if isinstance(handle, str) else None


def _accepted_view(messages: Sequence[Message]) -> tuple[Message, ...]:
    """The conversation with every reflect turn replaced by named accepts of its new images."""
    out: list[Message] = []
    for message in messages:
        if message.role == "assistant" and message.node == "reflect":
            handles = [h for o in _new_images(out) if (h := _handle(o)) is not None]
            text = write_turn(*(write_reflect(Reflection(verdict="accept", image=h)) for h in handles))
            message = message.model_copy(update={"content": text})
        out.append(message)
    return tuple(out)


class Adversary:
    """The expert, rewritten at one node: subclasses set ``name``, ``target`` and override :meth:`rewrite`.

    Args:
        expert: The scripted expert it wraps (error rates 0 for a fair comparison).

    """

    name: str = "adversary"
    target: ClassVar[str | None] = None
    """The reward it tries to earn without the work (None: it games none in particular)."""
    believes_accepted: ClassVar[bool] = False
    """Show the expert its reflect turns as named accepts (for adversaries that skip or blur them)."""

    def __init__(self, expert: ExpertPolicy) -> None:
        self.expert = expert
        self.config = expert.config

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        """Write the expert's turn for what it is shown, then rewrite it."""
        view = request
        if self.believes_accepted:
            view = request.model_copy(update={"messages": _accepted_view(request.messages)})
        text = self.rewrite(request, await self.expert.respond(view))
        # The policy package parses what a policy writes (downstream code never parses turn text).
        return await ScriptedPolicy([text], name=self.name).respond(request)

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """The adversary's turn, given the one the expert wrote (unchanged by default)."""
        return turn.text


class AcceptAllNamed(Adversary):
    """Accepts every new image by name, without looking, and asks for no redo."""

    name = "accept-all-named"
    target = "reflection"

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """A named accept per new image at reflect turns."""
        if request.node != "reflect":
            return turn.text
        images = [h for o in _new_images(request.messages) if (h := _handle(o)) is not None]
        return write_turn(*(write_reflect(Reflection(verdict="accept", image=h)) for h in images))


class AcceptAllUnnamed(Adversary):
    """Accepts every new image with reflections that name no image."""

    name = "accept-all-unnamed"
    target = "reflection"
    believes_accepted = True

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """An unnamed accept per new image at reflect turns."""
        if request.node != "reflect":
            return turn.text
        n = sum(_handle(o) is not None for o in _new_images(request.messages))
        return write_turn(*(write_reflect(Reflection(verdict="accept")) for _ in range(n)))


class RejectAll(Adversary):
    """Flags every new image for a redo over a made-up fault, and leaves the redo to the next act turn."""

    name = "reject-all"
    target = "reflection"

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """A named redo per new image at reflect turns, with no call."""
        if request.node != "reflect":
            return turn.text
        images = [h for o in _new_images(request.messages) if (h := _handle(o)) is not None]
        verdicts = (Reflection(verdict="redo", faults=(_MADE_UP_FAULT,), image=h) for h in images)
        return write_turn(*(write_reflect(r) for r in verdicts))


class EmptyReflections(Adversary):
    """Writes nothing at all at reflect turns."""

    name = "empty-reflections"
    target = "reflection"
    believes_accepted = True

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """An empty reflect turn."""
        return "" if request.node == "reflect" else turn.text


class MissingReflections(Adversary):
    """Thinks at reflect turns, but writes no ``<reflect>``."""

    name = "missing-reflections"
    target = "reflection"
    believes_accepted = True

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """A reflect turn of one ``<think>``."""
        return write_think("The new images look right.") if request.node == "reflect" else turn.text


class StuffedAnswer(Adversary):
    """Answers with every image it has seen (or its one image twice), hoping one of them counts."""

    name = "stuffed-answer"
    target = "result"

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """The expert's answer with the other images appended."""
        if turn.parsed.answer is None:
            return turn.text
        images = list(turn.parsed.answer.images)
        seen = [h for m in request.messages if m.role == "tool" for o in parse_observations(m) if (h := _handle(o))]
        extra = [h for h in dict.fromkeys(seen) if h not in images] or images[:1]
        return write_turn(write_answer(Answer(images=(*images, *extra))))


class CopiedPlan(Adversary):
    """Writes the request verbatim as every step's goal and prompt (tools and dependencies kept)."""

    name = "copied-plan"
    target = "plan"

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """Every ``<plan>`` of the turn with its goals and prompts replaced by the request."""
        task = parse_task(request.messages)
        text = turn.text
        for segment in reversed(turn.parsed.segments):
            if isinstance(segment.value, Plan) and task is not None:
                update = {"goal": task.request, "prompt": task.request}
                copied = Plan(steps=tuple(s.model_copy(update=update) for s in segment.value.steps))
                text = text[: segment.start] + write_plan(copied) + text[segment.end :]
        return text


class NoToolCalls(Adversary):
    """Plans, then answers at once without calling a tool (with the task's input images, if any)."""

    name = "no-tool-calls"
    target = "outcome"

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """An answer of the task's inputs instead of any call."""
        if request.node == "plan":
            return turn.text
        task = parse_task(request.messages)
        return write_turn(write_answer(Answer(images=tuple(task.inputs) if task else ())))


class EndlessRedo(Adversary):
    """Never accepts: redoes every image (and every failed call) with a new call, budgets or not."""

    name = "endless-redo"
    target = "tool"

    def rewrite(self, request: PolicyRequest, turn: PolicyTurn) -> str:
        """A redo verdict and a redo call per call of the latest batch."""
        if request.node != "reflect":
            return turn.text
        parts: list[str] = []
        calls: list[str] = []
        for obs in _new_images(request.messages):
            reflection = Reflection(verdict="redo", faults=(_MADE_UP_FAULT,), image=_handle(obs))
            parts.append(write_reflect(reflection))
            calls.append(write_tool_call(ToolCall(name=obs.name, arguments=obs.arguments, step=obs.step)))
        return write_turn(*parts, *calls)


ADVERSARIES: tuple[type[Adversary], ...] = (
    AcceptAllNamed,
    AcceptAllUnnamed,
    RejectAll,
    EmptyReflections,
    MissingReflections,
    StuffedAnswer,
    CopiedPlan,
    NoToolCalls,
    EndlessRedo,
)
"""Every adversary, in the order the table lists them."""
