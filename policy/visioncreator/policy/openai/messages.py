"""Our conversation as OpenAI chat messages, and OpenAI answers as canonical turn text.

Two encodings, chosen by :attr:`OpenAIPolicySettings.tool_mode`:

- ``tags``: every message is text. Our ``tool`` messages (a batch of ``<observation>`` blocks,
  not OpenAI tool results: nothing pairs them with a call id the server issued) go as ``user``
  messages that start with :data:`TOOL_RESULTS_PREFIX`, so that no chat template sees a ``tool``
  message without a matching assistant ``tool_calls``. Consecutive ``user`` messages are merged,
  because strict templates demand alternating roles.
- ``native``: an assistant turn's ``<tool_call>`` segments become ``tool_calls`` (the rest of the
  text stays its content) and the observations of the next ``tool`` message become ``tool``
  messages, right after it, paired by call id (or by order when the graph assigned the id).
  Every call gets a ``tool`` message, as the OpenAI API demands. Images of the observations
  follow in one ``user`` message, because ``tool`` messages carry text only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from visioncreator.policy.format import parse_turn, to_tool_call, write_think, write_tool_call
from visioncreator.policy.images import decode_image
from visioncreator.policy.openai.settings import OpenAIPolicySettings
from visioncreator.policy.prompting import Observation, node_instruction, parse_observations
from visioncreator.policy.types import FormatError, Message, Node, ToolCall, ToolSpec

__all__ = ["TOOL_RESULTS_PREFIX", "ImageSource", "encode_image", "native_tools", "to_chat_messages", "turn_text"]

TOOL_RESULTS_PREFIX = "Tool results:\n"
_IMAGES_NOTE = "Images from the tool results above:"
_NOT_RUN = "not run: see the next message"

ChatMessage = dict[str, Any]


@runtime_checkable
class ImageSource(Protocol):
    """Where image bytes come from: anything with ``async read(handle) -> bytes``.

    The graph's ``ToolClient.read_image`` fits; so does an image store.
    """

    async def read(self, handle: str) -> bytes:
        """The bytes of the image with this handle."""
        ...


def encode_image(data: bytes, settings: OpenAIPolicySettings) -> str:
    """Decode an image within limits, fit it in ``image_max_side`` and return a data URI.

    Raises:
        ValueError: The bytes are not a PNG/JPEG/WebP image, or exceed the size limits.

    """
    rgb = decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    rgb.thumbnail((settings.image_max_side, settings.image_max_side))
    out = io.BytesIO()
    if settings.image_format == "JPEG":
        rgb.save(out, format="JPEG", quality=settings.image_quality)
        mime = "image/jpeg"
    else:
        rgb.save(out, format="PNG", optimize=False)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(out.getvalue()).decode('ascii')}"


def native_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tools as OpenAI function tools; an optional integer ``step`` is added to each schema.

    ``step`` lets a native call name its plan step as a tagged call does; ``to_tool_call`` moves
    it back out of the arguments.
    """
    out: list[dict[str, Any]] = []
    for tool in tools:
        schema = dict(tool.input_schema)
        properties = dict(schema.get("properties") or {})
        properties.setdefault("step", {"type": "integer", "description": "The plan step this call serves."})
        schema["properties"] = properties
        schema.setdefault("type", "object")
        function = {"name": tool.name, "description": tool.description, "parameters": schema}
        out.append({"type": "function", "function": function})
    return out


def _content(text: str, uris: Sequence[str]) -> str | list[dict[str, Any]]:
    if not uris:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend({"type": "image_url", "image_url": {"url": uri}} for uri in uris)
    return parts


def _append_text(message: ChatMessage, text: str) -> None:
    content = message.get("content")
    if isinstance(content, list):
        content.append({"type": "text", "text": text})
    else:
        message["content"] = f"{content}\n\n{text}" if content else text


def _merge_users(messages: list[ChatMessage]) -> list[ChatMessage]:
    merged: list[ChatMessage] = []
    for message in messages:
        prev = merged[-1] if merged else None
        if prev is not None and prev["role"] == "user" and message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                _append_text(prev, content)
            else:
                if isinstance(prev["content"], str):
                    prev["content"] = [{"type": "text", "text": prev["content"]}]
                prev["content"].extend(content)
        else:
            merged.append(dict(message))
    return merged


def _call_id(call: ToolCall, text: str, k: int) -> str:
    # A stable id when the model gave none, so that a replayed conversation sends the same bytes
    # (prefix caching) and the pairing below is deterministic.
    return call.id or f"call_{hashlib.sha256(text.encode()).hexdigest()[:12]}_{k}"


def _native_assistant(message: Message) -> tuple[ChatMessage, list[tuple[str, ToolCall]]]:
    parsed = parse_turn(message.content)
    segments = [s for s in parsed.segments if isinstance(s.value, ToolCall)]
    if not segments:
        return {"role": "assistant", "content": message.content}, []
    kept, pos = [], 0
    for seg in segments:
        kept.append(message.content[pos : seg.start])
        pos = seg.end
    kept.append(message.content[pos:])
    values = [s.value for s in segments if isinstance(s.value, ToolCall)]
    calls = [(_call_id(call, message.content, k), call) for k, call in enumerate(values)]
    native = [
        {
            "id": cid,
            "type": "function",
            "function": {
                "name": call.name,
                "arguments": json.dumps({**call.arguments, **({"step": call.step} if call.step is not None else {})}),
            },
        }
        for cid, call in calls
    ]
    content = "\n".join(p.strip() for p in kept if p.strip())
    return {"role": "assistant", "content": content or None, "tool_calls": native}, calls


def _pair(
    calls: Sequence[tuple[str, ToolCall]], observations: Sequence[Observation]
) -> tuple[dict[str, Observation], list[Observation]]:
    """Match observations to calls: by id first, then in order among same-named calls."""
    by_id = {cid for cid, _ in calls}
    matched: dict[str, Observation] = {}
    rest: list[Observation] = []
    for obs in observations:
        if obs.call_id in by_id and obs.call_id not in matched:
            matched[obs.call_id] = obs
        else:
            rest.append(obs)
    leftover: list[Observation] = []
    for obs in rest:
        free = next((cid for cid, c in calls if cid not in matched and c.name == obs.name), None)
        if free is None:
            leftover.append(obs)
        else:
            matched[free] = obs
    return matched, leftover


async def to_chat_messages(
    messages: Sequence[Message],
    node: Node,
    settings: OpenAIPolicySettings,
    images: Mapping[str, str],
) -> list[ChatMessage]:
    """Our messages as OpenAI chat messages.

    Args:
        messages: The conversation.
        node: The node asking (for the appended instruction).
        settings: The back end's settings (tool mode, node instruction).
        images: Data URIs by handle, for the images to send; handles missing here are not sent.

    """
    out: list[ChatMessage] = []
    consumed: set[int] = set()

    def uris(m: Message) -> list[str]:
        return [images[h] for h in m.images if h in images]

    for i, m in enumerate(messages):
        if i in consumed:
            continue
        if m.role == "assistant" and m.node is not None and settings.append_node_instruction:
            # Each earlier turn keeps the instruction it was asked with, so the conversation is
            # rendered the same way on every turn and prompts extend each other (prefix caching,
            # token-exact trajectories).
            out.append({"role": "user", "content": node_instruction(m.node)})
        if m.role == "assistant" and settings.tool_mode == "native":
            chat, calls = _native_assistant(m)
            out.append(chat)
            if not calls:
                continue
            j = next((k for k in range(i + 1, len(messages)) if messages[k].role in ("tool", "assistant")), None)
            tool_msg = messages[j] if j is not None and messages[j].role == "tool" else None
            matched, leftover = _pair(calls, parse_observations(tool_msg) if tool_msg else [])
            for cid, _ in calls:
                obs = matched.get(cid)
                out.append({"role": "tool", "tool_call_id": cid, "content": obs.model_dump_json() if obs else _NOT_RUN})
            if tool_msg is not None and j is not None:
                consumed.add(j)
                extra = "\n".join(f"<observation>{o.model_dump_json()}</observation>" for o in leftover)
                if extra or uris(tool_msg):
                    note = (TOOL_RESULTS_PREFIX + extra) if extra else _IMAGES_NOTE
                    out.append({"role": "user", "content": _content(note, uris(tool_msg))})
        elif m.role == "tool":
            out.append({"role": "user", "content": _content(TOOL_RESULTS_PREFIX + m.content, uris(m))})
        else:
            out.append({"role": m.role, "content": _content(m.content, uris(m))})
    if settings.append_node_instruction:
        out.append({"role": "user", "content": node_instruction(node)})
    return _merge_users(out)


def turn_text(message: Mapping[str, Any]) -> str:
    """The canonical turn text of an OpenAI assistant message.

    The content comes first; a separate ``reasoning`` / ``reasoning_content`` (servers with a
    reasoning parser) becomes a leading ``<think>``; each native tool call becomes a
    ``<tool_call>`` segment after it. A native call that does not map to a ``ToolCall`` is
    written raw inside ``<tool_call>`` so that the parser reports it as it would a tagged one.
    """
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning.strip() and "<think>" not in text:
        # Reasoning that holds format tags cannot be wrapped without breaking the turn: dropped.
        with contextlib.suppress(ValueError):
            text = write_think(reasoning) + ("\n" + text if text else "")
    parts = [text] if text else []
    for native in message.get("tool_calls") or []:
        call = to_tool_call(native) if isinstance(native, Mapping) else FormatError(code="bad_schema", message="")
        if isinstance(call, ToolCall):
            parts.append(write_tool_call(call))
        else:
            raw = json.dumps(native, default=str) if not isinstance(native, Mapping) else _raw_call(native)
            parts.append("<tool_call>" + raw.replace("<", "\\u003c") + "</tool_call>")
    return "\n".join(parts)


def _raw_call(native: Mapping[str, Any]) -> str:
    function = native.get("function")
    if not isinstance(function, Mapping):
        return json.dumps(native, default=str)
    arguments = function.get("arguments")
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, default=str)
    return '{"name": ' + json.dumps(function.get("name"), default=str) + ', "arguments": ' + args + "}"
