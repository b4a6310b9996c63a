r"""Reading a streamed chat completion (``"stream": true``, server-sent events) within limits.

The events are folded back into the very JSON object a non-streamed answer would have been
(``choices[i].message`` with its content, reasoning and native tool calls, ``logprobs.content``,
vLLM's ``token_ids`` and ``prompt_token_ids``, ``usage``), so that one function
(:func:`~visioncreator.policy.openai.response.completion_turns`) checks and records both kinds of
answer alike. The stream counts against ``max_response_bytes`` as a body does: reading stops at
the cap. Each piece of content is handed on as it arrives, with lone surrogates already replaced
(as the recorded text has them), so the pieces concatenate to the turn's text.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx

from visioncreator.policy.errors import PolicyResponseError, PolicyResponseTooLargeError
from visioncreator.policy.openai.response import http_error, json_object

__all__ = ["read_stream"]

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


async def _events(response: httpx.Response, cap: int, url: str) -> AsyncIterator[bytes]:
    """The ``data`` of each server-sent event, until ``[DONE]`` or the end of the body."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise PolicyResponseError(f"{url} sent a stream compressed with {encoding!r}, though 'identity' was asked for")
    size = 0
    pending = b""
    data: list[bytes] = []
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > cap:
            raise PolicyResponseTooLargeError(
                f"{url} streamed over max_response_bytes={cap}; stopped reading at {size} bytes",
                limit=cap,
                size=size,
                unit="bytes",
            )
        if b"\n" not in chunk:  # a long line in many chunks is not scanned again for each
            pending += chunk
            continue
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif not line and data:  # a blank line ends an event
                event, data = b"\n".join(data), []
                if event.strip() == b"[DONE]":
                    return
                yield event
    if pending.startswith(b"data:"):
        data.append(pending[5:].removeprefix(b" "))
    if data and b"\n".join(data).strip() != b"[DONE]":
        yield b"\n".join(data)


class _Choice:
    """One choice's deltas, folded."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] | None = None
        self.token_ids: list[Any] | None = None
        self.prompt_token_ids: Any = None
        self.finish_reason: Any = None

    def add(self, choice: Mapping[str, Any]) -> str:
        """Fold one delta in; return its new content."""
        delta = choice.get("delta") or {}
        if not isinstance(delta, Mapping):
            raise PolicyResponseError(f"a streamed choice's delta is not an object: {str(delta)[:200]}")
        content = delta.get("content")
        piece = content if isinstance(content, str) else ""
        self.content.append(piece)
        for key in ("reasoning", "reasoning_content"):
            if isinstance(delta.get(key), str):
                self.reasoning.append(delta[key])
        for call in delta.get("tool_calls") or ():
            self._add_call(call)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping) and logprobs.get("content") is not None:
            if not isinstance(logprobs["content"], list):
                raise PolicyResponseError(f"'logprobs.content' is not a list: {str(logprobs)[:200]}")
            self.logprobs = [*(self.logprobs or ()), *logprobs["content"]]
        ids = choice.get("token_ids")
        if ids is not None:
            if not isinstance(ids, list):
                raise PolicyResponseError(f"'token_ids' is not a list: {str(ids)[:200]}")
            self.token_ids = [*(self.token_ids or ()), *ids]
        if choice.get("prompt_token_ids") is not None:
            self.prompt_token_ids = choice["prompt_token_ids"]
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        return piece

    def _add_call(self, call: Any) -> None:
        if not isinstance(call, Mapping) or not isinstance(call.get("index", 0), int):
            raise PolicyResponseError(f"a streamed tool call is not an object with an index: {str(call)[:200]}")
        folded = self.calls.setdefault(call.get("index", 0), {"function": {"name": "", "arguments": ""}})
        for key in ("id", "type"):
            if isinstance(call.get(key), str):
                folded[key] = call[key]
        function = call.get("function")
        if isinstance(function, Mapping):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    folded["function"][key] += function[key]

    def message(self, index: int) -> dict[str, Any]:
        """The choice as a non-streamed answer holds it."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoning:
            message["reasoning"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [self.calls[k] for k in sorted(self.calls)]
        out: dict[str, Any] = {"index": index, "message": message, "finish_reason": self.finish_reason}
        out["logprobs"] = None if self.logprobs is None else {"content": self.logprobs}
        if self.token_ids is not None:
            out["token_ids"] = self.token_ids
        if self.prompt_token_ids is not None:
            out["prompt_token_ids"] = self.prompt_token_ids
        return out


async def read_stream(
    response: httpx.Response, cap: int, url: str, on_content: Callable[[str], Awaitable[None]]
) -> dict[str, Any]:
    """A streamed 200 answer, folded into the JSON object of a non-streamed one.

    Args:
        response: The open response (``"stream": true`` was asked).
        cap: ``max_response_bytes``: reading stops past it.
        url: The endpoint, for messages.
        on_content: Awaited with each new piece of choice 0's content (lone surrogates replaced),
            while choice 0 has no reasoning: content after reasoning is held back, since the
            turn's text puts the reasoning first.

    Raises:
        PolicyResponseTooLargeError: The stream passed ``cap`` bytes.
        PolicyResponseError: An event is not a chat completion chunk, or the stream ended before
            a choice had its ``finish_reason``.
        PolicyHTTPError: The server sent an error event mid-stream (vLLM does, e.g. on a
            failure after the answer started).

    """
    data: dict[str, Any] = {}
    choices: dict[int, _Choice] = {}
    async for event in _events(response, cap, url):
        chunk = json_object(event, url)
        if isinstance(chunk.get("error"), Mapping):
            error = chunk["error"]
            status = error.get("code") if isinstance(error.get("code"), int) else 500
            raise http_error(status, json.dumps(chunk).encode(), "", attempts=1, url=url)
        for key in ("model", "id", "prompt_token_ids", "usage"):
            if chunk.get(key) is not None:
                data[key] = chunk[key]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or not isinstance(choice.get("index", 0), int):
                raise PolicyResponseError(f"a streamed choice is not an object with an index: {str(choice)[:200]}")
            index = choice.get("index", 0)
            folded = choices.setdefault(index, _Choice())
            piece = folded.add(choice)
            if piece and index == 0 and not folded.reasoning:
                await on_content(_SURROGATE_RE.sub("\ufffd", piece))
    if any(c.finish_reason is None for c in choices.values()):
        raise PolicyResponseError(f"the stream from {url} ended before its answer did (no finish_reason)")
    data["choices"] = [choices[k].message(k) for k in sorted(choices)]
    return data
