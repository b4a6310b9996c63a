r"""Reading an OpenAI-compatible server's answer within limits, and turning it into policy turns.

Nothing here trusts the server: a body is streamed and reading stops at ``max_response_bytes``
(never buffering more than one network chunk past it), a completion longer than the
``max_tokens`` it was asked for is refused, and text that no UTF-8 record could store (a lone
surrogate, which JSON's ``\ud800`` escape decodes to) is replaced by U+FFFD after the parser
has reported it as a ``bad_unicode`` format error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from visioncreator.policy.errors import (
    PolicyContextLengthError,
    PolicyHTTPError,
    PolicyResponseError,
    PolicyResponseTooLargeError,
)
from visioncreator.policy.format import parse_turn
from visioncreator.policy.openai.messages import turn_text
from visioncreator.policy.openai.settings import OpenAIPolicySettings
from visioncreator.policy.types import PolicyTurn

__all__ = ["completion_turns", "http_error", "json_object", "read_body", "read_error_body"]

_OVERFLOW_RE = re.compile(
    r"maximum context length|context length|context window|max_model_len|maximum model length|"
    r"prompt is too long|too many tokens|context_length_exceeded",
    re.IGNORECASE,
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _encoding_checked(response: httpx.Response, url: str) -> None:
    # The client asks for 'identity': a compressed body could inflate a thousandfold past any cap
    # within one chunk, so a server that compresses anyway is refused rather than decoded.
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise PolicyResponseError(f"{url} sent a body compressed with {encoding!r}, though 'identity' was asked for")


async def read_body(response: httpx.Response, cap: int, url: str) -> bytes:
    """The body of a 200 answer, read as it streams in, at most ``cap`` bytes.

    Raises:
        PolicyResponseTooLargeError: The declared length or the bytes read exceed ``cap``; reading
            stops there (at most one network chunk past ``cap`` is held).
        PolicyResponseError: The body is compressed although it was not asked to be.

    """
    _encoding_checked(response, url)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise PolicyResponseTooLargeError(
            f"{url} announced a body of {int(declared)} bytes, over max_response_bytes={cap}; not read",
            limit=cap,
            size=int(declared),
            unit="bytes",
        )
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > cap:
            raise PolicyResponseTooLargeError(
                f"{url} sent a body over max_response_bytes={cap}; stopped reading at {len(body)} bytes",
                limit=cap,
                size=len(body),
                unit="bytes",
            )
    return bytes(body)


async def read_error_body(response: httpx.Response, cap: int) -> bytes:
    """The first ``cap`` bytes of an error answer (enough for the server's message); the rest is not read."""
    if response.headers.get("content-encoding", "").strip().lower() not in ("", "identity"):
        return b""
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) >= cap:
            break
    return bytes(body[:cap])


def _server_message(body: bytes, reason: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:500].decode("utf-8", "replace") or reason
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])
    return json.dumps(data)[:500]


def http_error(status: int, body: bytes, reason: str, *, attempts: int, url: str) -> PolicyHTTPError:
    """The typed error of an HTTP error answer (a prompt too long for the context is its own type)."""
    # The message goes into exception text and logs, which must encode as UTF-8.
    message = _SURROGATE_RE.sub("\ufffd", _server_message(body, reason))
    if status == 400 and _OVERFLOW_RE.search(message):
        return PolicyContextLengthError(400, message, attempts=attempts, url=url)
    return PolicyHTTPError(status, message, attempts=attempts, url=url)


def json_object(body: bytes, url: str) -> dict[str, Any]:
    """The body as a JSON object.

    Raises:
        PolicyResponseError: It is not valid UTF-8 JSON, or not an object.

    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PolicyResponseError(f"{url} answered 200 with a body that is not JSON: {body[:200]!r}") from exc
    if not isinstance(data, dict):
        raise PolicyResponseError(f"{url} answered 200 with JSON that is not an object: {str(data)[:200]}")
    return data


def _ids(value: Any, field: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise PolicyResponseError(f"'{field}' is not a list of integers: {str(value)[:200]}")
    return tuple(value)


def _logprobs(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    content = value.get("content") if isinstance(value, Mapping) else None
    if content is None:
        return None
    if not isinstance(content, Sequence) or not all(
        isinstance(t, Mapping) and isinstance(t.get("logprob"), int | float) for t in content
    ):
        raise PolicyResponseError(f"'logprobs.content' is not a list of token log-probabilities: {str(value)[:200]}")
    return tuple(float(t["logprob"]) for t in content)


def _too_long(what: str, size: int, limit: int, unit: str) -> PolicyResponseTooLargeError:
    return PolicyResponseTooLargeError(
        f"the server ignored max_tokens: {what} of {size} {unit}, over the limit of {limit}",
        limit=limit,
        size=size,
        unit=unit,
    )


def _check_usage(data: Mapping[str, Any], n: int, max_tokens: int) -> None:
    usage = data.get("usage")
    used = usage.get("completion_tokens") if isinstance(usage, Mapping) else None
    # usage sums all n choices.
    if isinstance(used, int) and not isinstance(used, bool) and used > n * max_tokens:
        raise _too_long(f"usage.completion_tokens for {n} choice(s)", used, n * max_tokens, "tokens")


def _check_choice(
    text: str, ids: Sequence[int] | None, logprobs: Sequence[float] | None, max_tokens: int, max_chars: int
) -> None:
    for what, values in (("token_ids", ids), ("logprobs", logprobs)):
        if values is not None and len(values) > max_tokens:
            raise _too_long(f"a choice's {what}", len(values), max_tokens, "tokens")
    if len(text) > max_chars:
        raise _too_long("a choice's text", len(text), max_chars, "characters")


def completion_turns(
    data: Mapping[str, Any], n: int, *, settings: OpenAIPolicySettings, max_tokens: int, latency: float
) -> list[PolicyTurn]:
    """The first ``n`` choices of a chat completion as turns, in choice order.

    Args:
        data: The answer's JSON object.
        n: How many choices were asked for.
        settings: The back end's settings (the model name's fallback, ``max_chars_per_token``).
        max_tokens: The ``max_tokens`` the request sent.
        latency: Seconds the request took, recorded on each turn.

    Raises:
        PolicyResponseError: The answer is not a chat completion with ``n`` choices.
        PolicyResponseTooLargeError: A choice is longer than ``max_tokens`` allows.

    """
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) < n or not all(isinstance(c, dict) for c in choices):
        raise PolicyResponseError(f"expected {n} choice(s) in the answer, got {str(choices)[:200]}")
    _check_usage(data, n, max_tokens)
    ordered = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)
    model = data.get("model") if isinstance(data.get("model"), str) else settings.model
    prompt_ids = _ids(data.get("prompt_token_ids"), "prompt_token_ids")
    turns = []
    for choice in ordered[:n]:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise PolicyResponseError(f"a choice has no message: {str(choice)[:200]}")
        text = turn_text(message)
        ids = _ids(choice.get("token_ids"), "token_ids")
        logprobs = _logprobs(choice.get("logprobs"))
        # Checked before parsing: an oversize text is refused, not parsed.
        _check_choice(text, ids, logprobs, max_tokens, max_tokens * settings.max_chars_per_token)
        turn = PolicyTurn(
            # Parsed before the scrub, so that a lone surrogate is reported where it was.
            text=_SURROGATE_RE.sub("\ufffd", text),
            parsed=parse_turn(text),
            model=_SURROGATE_RE.sub("\ufffd", str(model)),
            prompt_token_ids=prompt_ids or _ids(choice.get("prompt_token_ids"), "prompt_token_ids"),
            completion_token_ids=ids,
            logprobs=logprobs,
            latency_s=latency,
        )
        turns.append(turn)
    return turns
