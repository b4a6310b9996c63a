r"""The canonical text format of policy turns: the one parser and its writers.

A turn is a sequence of tagged segments::

    <think>free text</think>
    <plan>[{"step": 1, "goal": "...", "tool": "text_to_image", "depends_on": [], "prompt": "..."}]</plan>
    <tool_call>{"name": "text_to_image", "arguments": {...}, "step": 1}</tool_call>
    <reflect>{"verdict": "accept", "faults": [], "image": "img_..."}</reflect>
    <answer>{"images": ["img_..."]}</answer>

:func:`parse_turn` never raises: every problem becomes a
:class:`~visioncreator.policy.types.FormatError` with a code and a character span, and the
well-formed segments around a bad one are still returned. The writers produce exactly what the
parser reads back, so scripted policies write SFT data in the format models are trained on.

Invalid Unicode is a format error too (code ``bad_unicode``): a lone surrogate (U+D800-U+DFFF, which
no UTF-8 record, checkpoint or request body can hold) written raw in the text, or escaped
(``\ud800``) inside a segment's JSON or a native call's arguments. The segment that holds it is not
used; the rest of the turn is parsed as usual.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

from pydantic import ValidationError

from visioncreator.policy.errors import FormatWriteError
from visioncreator.policy.types import (
    Answer,
    FormatError,
    FormatErrorCode,
    ParsedTurn,
    Plan,
    PlanStep,
    Reflection,
    Segment,
    SegmentKind,
    SegmentValue,
    ToolCall,
)

__all__ = [
    "SEGMENT_KINDS",
    "parse_turn",
    "to_tool_call",
    "write_answer",
    "write_plan",
    "write_reflect",
    "write_think",
    "write_tool_call",
    "write_turn",
]

SEGMENT_KINDS: tuple[SegmentKind, ...] = ("think", "plan", "tool_call", "reflect", "answer")
_KNOWN: frozenset[str] = frozenset(SEGMENT_KINDS)
# Only an exact ``<name>`` or ``</name>`` is a tag; ``a < b`` or ``<tool_c`` is plain text.
_TAG_RE = re.compile(r"<(/?)([A-Za-z_][A-Za-z0-9_\-]*)>")
_KNOWN_TAG_RE = re.compile(r"</?(?:think|plan|tool_call|reflect|answer)>")
# Python strings may hold lone surrogates (JSON's "\ud800" decodes to one); UTF-8 cannot encode them.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class _Tag(NamedTuple):
    start: int
    end: int
    closing: bool
    name: str


def _error(code: FormatErrorCode, message: str, start: int, end: int) -> FormatError:
    return FormatError(code=code, message=message, start=start, end=end)


def _holds_surrogate(value: Any) -> bool:
    """Whether any string in a JSON-like value (keys included) holds a lone surrogate."""
    stack = [value]  # iterative: JSON nesting may be deeper than Python's recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_RE.search(item):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _unicode_error(kind: str, start: int, end: int) -> FormatError:
    return _error("bad_unicode", f"<{kind}> body holds invalid Unicode (a lone surrogate, \\ud800-\\udfff)", start, end)


def _load_json(body: str, kind: str, start: int, end: int) -> tuple[Any, FormatError | None]:
    try:
        data = json.loads(body)
    # Deeply nested input exhausts the recursion limit; huge integers raise ValueError.
    except (ValueError, RecursionError) as exc:
        return None, _error("bad_json", f"<{kind}> body is not valid JSON: {str(exc)[:200]}", start, end)
    # A parsed string can hold a lone surrogate only from a literal one in the text or a \u escape
    # (JSON spells it only in lower case): without either, the walk through the value is skipped.
    if ("\\u" in body or (not body.isascii() and _SURROGATE_RE.search(body))) and _holds_surrogate(data):
        return None, _unicode_error(kind, start, end)
    return data, None


def _schema_error(kind: str, detail: str, start: int, end: int) -> FormatError:
    return _error("bad_schema", f"<{kind}> body does not match its schema: {detail[:300]}", start, end)


def _parse_body(kind: str, body: str, start: int, end: int) -> tuple[SegmentValue, FormatError | None]:
    """The value of one segment body, or the error that stops it."""
    if kind == "think":
        return None, None
    data, err = _load_json(body, kind, start, end)
    if err is not None:
        return None, err
    try:
        if kind == "plan":
            steps = data.get("steps") if isinstance(data, dict) else data
            if not isinstance(steps, list):
                return None, _schema_error(kind, "expected a list of steps or {'steps': [...]}", start, end)
            if not steps:
                return None, _schema_error(kind, "the plan has no steps", start, end)
            return Plan.model_validate({"steps": steps}), None
        if not isinstance(data, dict):
            return None, _schema_error(kind, "expected a JSON object", start, end)
        if kind == "tool_call":
            return ToolCall.model_validate(data), None
        if kind == "reflect":
            return Reflection.model_validate(data), None
        return Answer.model_validate(data), None
    except ValidationError as exc:
        return None, _schema_error(kind, str(exc), start, end)


def _scan_links(tags: Sequence[_Tag]) -> tuple[list[int], list[int]]:
    """For each tag: the index of the next closing tag of the same name, and of the next known tag.

    Computed in one backward pass, so that recovery never rescans the text (linear time).
    """
    n = len(tags)
    next_close = [-1] * n
    next_known = [-1] * n
    last_close: dict[str, int] = {}
    last_known = -1
    for i in range(n - 1, -1, -1):
        next_close[i] = last_close.get(tags[i].name, -1)
        next_known[i] = last_known
        if tags[i].closing:
            last_close[tags[i].name] = i
        if tags[i].name in _KNOWN:
            last_known = i
    return next_close, next_known


def parse_turn(text: str) -> ParsedTurn:
    """Parse one assistant turn. Never raises.

    Args:
        text: The turn as the model wrote it.

    Returns:
        The well-formed segments in order, with their spans in ``text``, and one error per problem
        (empty turn, unknown tag, unclosed tag, stray closing tag, nested tags, bad JSON, bad schema,
        stray text outside tags, invalid Unicode).

    """
    first = _SURROGATE_RE.search(text)
    if first is None:
        return _parse(text)
    # One code point for one: spans stay valid in the original text.
    parsed = _parse(_SURROGATE_RE.sub("\ufffd", text))
    bad = [m.start() for m in _SURROGATE_RE.finditer(text)]
    kept = tuple(s for s in parsed.segments if bisect.bisect_left(bad, s.start) == bisect.bisect_left(bad, s.end))
    at = first.start()
    error = _error(
        "bad_unicode",
        f"the turn contains invalid Unicode (lone surrogate at offset {at}); any segment holding it is not used",
        at,
        at + 1,
    )
    errors = sorted((*parsed.errors, error), key=lambda e: e.start)
    return ParsedTurn(segments=kept, errors=tuple(errors))


def _parse(text: str) -> ParsedTurn:
    if not text.strip():
        return ParsedTurn(errors=(_error("empty", "the turn is empty", 0, len(text)),))
    tags = [_Tag(m.start(), m.end(), m.group(1) == "/", m.group(2)) for m in _TAG_RE.finditer(text)]
    next_close, next_known = _scan_links(tags)
    segments: list[Segment] = []
    errors: list[FormatError] = []
    pos = 0

    def flush(upto: int) -> None:
        run = text[pos:upto]
        stripped = run.strip()
        if stripped:
            first = pos + (len(run) - len(run.lstrip()))
            errors.append(_error("stray_text", f"text outside tags: {stripped[:80]!r}", first, first + len(stripped)))

    i = 0
    while i < len(tags):
        tag = tags[i]
        flush(tag.start)
        if tag.name not in _KNOWN:
            close = next_close[i]
            # Swallow ``<foo>...</foo>`` whole, unless a known tag sits inside it.
            swallow = not tag.closing and close >= 0 and not (0 <= next_known[i] < close)
            end_i = close if swallow else i
            errors.append(_error("unknown_tag", f"unknown tag <{tag.name}>", tag.start, tags[end_i].end))
        elif tag.closing:
            end_i = i
            errors.append(
                _error("stray_close", f"closing tag </{tag.name}> without an opening tag", tag.start, tag.end)
            )
        else:
            known = next_known[i]
            if known >= 0 and tags[known].closing and tags[known].name == tag.name:
                end_i = known
                close_tag = tags[known]
                body = text[tag.end : close_tag.start].strip()
                value, err = _parse_body(tag.name, body, tag.start, close_tag.end)
                if err is not None:
                    errors.append(err)
                else:
                    kind = cast(SegmentKind, tag.name)
                    segments.append(Segment(kind=kind, start=tag.start, end=close_tag.end, body=body, value=value))
            elif next_close[i] >= 0:
                end_i = next_close[i]
                errors.append(_error("nested_tag", f"<{tag.name}> holds another tag", tag.start, tags[end_i].end))
            else:
                # Resume at the next known tag so that segments after a truncated one survive.
                stop = tags[known].start if known >= 0 else len(text)
                errors.append(_error("unclosed_tag", f"<{tag.name}> is never closed", tag.start, stop))
                pos = stop
                i = known if known >= 0 else len(tags)
                continue
        pos = tags[end_i].end
        i = end_i + 1
    flush(len(text))
    return ParsedTurn(segments=tuple(segments), errors=tuple(errors))


def to_tool_call(native: Mapping[str, Any]) -> ToolCall | FormatError:
    """Map an OpenAI-style native tool call to the same :class:`ToolCall` a ``<tool_call>`` gives.

    Args:
        native: ``{"id": ..., "type": "function", "function": {"name": ..., "arguments": "<json>"}}``.
            ``arguments`` may also be a mapping already. An integer ``step`` inside the arguments is
            moved to :attr:`ToolCall.step`, since the tools themselves do not accept it.

    Returns:
        The tool call, or a ``bad_json`` / ``bad_schema`` error. Never raises.

    """
    try:
        function = native.get("function", native)
        if not isinstance(function, Mapping):
            return _schema_error("tool_call", "'function' is not an object", 0, 0)
        raw = function.get("arguments")
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            arguments: Any = {}
        elif isinstance(raw, str):
            arguments, err = _load_json(raw, "tool_call", 0, 0)
            if err is not None:
                return err
        else:
            arguments = raw
        if not isinstance(arguments, Mapping):
            return _schema_error("tool_call", "arguments are not a JSON object", 0, 0)
        arguments = dict(arguments)
        step = arguments.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            del arguments["step"]
        else:
            step = None
        call_id = native.get("id") or ""
        call = ToolCall.model_validate(
            {"name": function.get("name"), "arguments": arguments, "step": step, "id": str(call_id)}
        )
        if _holds_surrogate([call.name, call.id, call.arguments]):
            return _unicode_error("tool_call", 0, 0)
        return call
    except ValidationError as exc:
        return _schema_error("tool_call", str(exc), 0, 0)
    except (TypeError, AttributeError) as exc:
        return _schema_error("tool_call", f"not a native tool call: {exc}", 0, 0)


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _sorted(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def _dumps(obj: Any) -> str:
    # '<' only ever occurs inside JSON strings, where \u003c means the same: escaping it keeps a
    # prompt that mentions "</plan>" from closing the segment early.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _wrap(kind: SegmentKind, body: str) -> str:
    return f"<{kind}>{body}</{kind}>"


def write_think(text: str) -> str:
    """A ``<think>`` segment.

    Raises:
        FormatWriteError: ``text`` holds a tag of the format, which would break the turn.

    """
    if _KNOWN_TAG_RE.search(text):
        raise FormatWriteError("think text must not contain format tags")
    return _wrap("think", text.strip())


def _step_dict(step: PlanStep) -> dict[str, Any]:
    out: dict[str, Any] = {"step": step.step, "goal": step.goal, "tool": step.tool, "depends_on": list(step.depends_on)}
    if step.prompt is not None:
        out["prompt"] = step.prompt
    return out


def write_plan(plan: Plan | Sequence[PlanStep]) -> str:
    """A ``<plan>`` segment: a JSON list of steps."""
    steps = plan.steps if isinstance(plan, Plan) else tuple(plan)
    return _wrap("plan", _dumps([_step_dict(s) for s in steps]))


def write_tool_call(call: ToolCall) -> str:
    """A ``<tool_call>`` segment; argument keys sorted for determinism."""
    out: dict[str, Any] = {"name": call.name, "arguments": _sorted(call.arguments)}
    if call.step is not None:
        out["step"] = call.step
    if call.id:
        out["id"] = call.id
    return _wrap("tool_call", _dumps(out))


def write_reflect(reflection: Reflection) -> str:
    """A ``<reflect>`` segment."""
    out: dict[str, Any] = {"verdict": reflection.verdict, "faults": list(reflection.faults)}
    if reflection.image is not None:
        out["image"] = reflection.image
    return _wrap("reflect", _dumps(out))


def write_answer(answer: Answer) -> str:
    """An ``<answer>`` segment."""
    return _wrap("answer", _dumps({"images": list(answer.images)}))


def write_turn(*segments: str) -> str:
    """Join written segments into one turn, one segment per line."""
    return "\n".join(segments)
