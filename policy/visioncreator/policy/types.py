"""The data a policy reads and writes: tasks, messages, segments, turns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

Split = Literal["single", "multi", "img2img"]
Node = Literal["plan", "act", "reflect", "finish"]
SegmentKind = Literal["think", "plan", "tool_call", "reflect", "answer"]
Verdict = Literal["accept", "redo", "revise"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(_Frozen):
    """What the agent is asked to do."""

    request: str = Field(min_length=1, max_length=4000, description="The request in words.")
    n_images: int = Field(default=1, ge=1, le=16, description="How many images the answer must hold.")
    split: Split = "single"
    inputs: tuple[str, ...] = Field(default=(), description="Handles of the input images (img2img).")
    id: str | None = None


class PlanStep(_Frozen):
    """One step of a plan."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    step: int = Field(ge=1)
    goal: str = Field(description="What this step's image must satisfy, in the request's words.")
    tool: str
    depends_on: tuple[int, ...] = ()
    prompt: str | None = Field(default=None, description="The prompt or instruction the step will use.")


class Plan(_Frozen):
    """An ordered plan."""

    steps: tuple[PlanStep, ...]


class ToolCall(_Frozen):
    """One tool call, from a ``<tool_call>`` segment or a native tool call."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    step: int | None = Field(default=None, description="The plan step this call serves, if the policy says.")
    id: str = Field(default="", description="Call id; the graph assigns one when empty.")


class Reflection(_Frozen):
    """A judgement on one image."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    verdict: Verdict
    faults: tuple[str, ...] = ()
    image: str | None = None


class Answer(_Frozen):
    """The final answer: the output images in order."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    images: tuple[str, ...]


SegmentValue = Plan | ToolCall | Reflection | Answer | None


class Segment(_Frozen):
    """One tagged segment of an assistant turn, with its character span in the turn text.

    ``value`` is what the body parsed into (``None`` for ``think`` and for a body that did not
    parse); records keep it, so that nothing downstream parses the text again. Read back from JSON,
    the value is validated as the type its ``kind`` names.
    """

    kind: SegmentKind
    start: int = Field(description="Offset of the opening tag in the turn text.")
    end: int = Field(description="Offset just past the closing tag.")
    body: str = Field(description="The text between the tags, stripped.")
    value: SegmentValue = None

    @model_validator(mode="before")
    @classmethod
    def _value_of_its_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("value"), dict):
            model = _VALUE_TYPES.get(data.get("kind"))
            if model is not None:
                data = {**data, "value": model.model_validate(data["value"])}
        return data


_VALUE_TYPES: dict[object, type[BaseModel]] = {
    "plan": Plan,
    "tool_call": ToolCall,
    "reflect": Reflection,
    "answer": Answer,
}


FormatErrorCode = Literal[
    "empty",
    "unknown_tag",
    "unclosed_tag",
    "stray_close",
    "nested_tag",
    "bad_json",
    "bad_schema",
    "stray_text",
    "bad_unicode",
    "too_long",
]
"""``bad_unicode``: the turn holds a lone surrogate (raw, or escaped in a JSON body), which no UTF-8
record can store; ``too_long``: the turn is longer than the graph keeps (``AgentConfig.max_turn_chars``)."""


class FormatError(_Frozen):
    """A problem with the format of a turn. Never raised: reported."""

    code: FormatErrorCode
    message: str
    start: int = 0
    end: int = 0


class ParsedTurn(_Frozen):
    """A parsed assistant turn."""

    segments: tuple[Segment, ...] = ()
    errors: tuple[FormatError, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the turn parsed without errors."""
        return not self.errors

    @property
    def plan(self) -> Plan | None:
        """The last plan in the turn, if any."""
        plans = [s.value for s in self.segments if isinstance(s.value, Plan)]
        return plans[-1] if plans else None

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """All tool calls in the turn, in order."""
        return tuple(s.value for s in self.segments if isinstance(s.value, ToolCall))

    @property
    def reflections(self) -> tuple[Reflection, ...]:
        """All reflections in the turn, in order."""
        return tuple(s.value for s in self.segments if isinstance(s.value, Reflection))

    @property
    def answer(self) -> Answer | None:
        """The last answer in the turn, if any."""
        answers = [s.value for s in self.segments if isinstance(s.value, Answer)]
        return answers[-1] if answers else None


Role = Literal["system", "user", "assistant", "tool"]


class Message(_Frozen):
    """One conversation message. Images travel as handles, never bytes."""

    role: Role
    content: str
    images: tuple[str, ...] = ()
    node: Node | None = Field(default=None, description="For assistant messages: the graph node that asked.")


class ToolSpec(_Frozen):
    """A tool as the policy sees it."""

    name: str
    description: str
    input_schema: dict[str, Any]


class PolicyRequest(_Frozen):
    """Everything a policy gets for one turn."""

    messages: tuple[Message, ...]
    node: Node = Field(description="The node asking: it says which segments the turn should hold.")
    tools: tuple[ToolSpec, ...] = ()
    seed: int | None = Field(
        default=None, description="The run's seed, the same for every turn of a run; sampling derives from it."
    )


class PolicyTurn(_Frozen):
    """One assistant turn as produced by a policy."""

    text: str
    parsed: ParsedTurn
    model: str = ""
    prompt_token_ids: tuple[int, ...] | None = None
    completion_token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None
    latency_s: float = 0.0


@runtime_checkable
class Policy(Protocol):
    """A policy: one assistant turn out for a conversation in."""

    name: str

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        """Produce the next assistant turn. Must not raise on model output it dislikes."""
        ...


TextSink = Callable[[str], Awaitable[None]]
"""Where a streaming policy sends its turn's text, piece by piece, as it is generated."""


@runtime_checkable
class StreamingPolicy(Policy, Protocol):
    """A policy that can also hand out its turn's text while it generates it.

    The graph asks for a streamed turn only when someone listens for tokens (LangGraph's
    ``stream_mode="messages"``); otherwise it calls :meth:`respond`.
    """

    async def respond_streaming(self, request: PolicyRequest, on_text: TextSink) -> PolicyTurn:
        """Produce the next turn as :meth:`respond` does, awaiting ``on_text`` with each new piece of its text.

        The pieces concatenate to the returned turn's ``text``, and the turn is recorded exactly
        as :meth:`respond` would record it (token ids, log-probabilities). A piece is never
        taken back: a turn that fails midway raises after the pieces already sent.
        """
        ...
