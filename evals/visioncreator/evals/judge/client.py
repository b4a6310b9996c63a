"""A small LLM judge client: one OpenAI-compatible chat request in, one structured answer out.

Shared by the vision judge (:class:`~visioncreator.evals.judge.vision.VisionJudge`) and, through
the ``visioncreator.evals`` face, the plan reward of ``visioncreator.rl``. The answer's shape is a
pydantic model; its JSON schema goes to the server as ``response_format`` (``json_schema``), so a
server with structured output (vLLM with xgrammar, hosted APIs) can only write a parseable answer.

What goes wrong, and what happens then:

===================================  ==========================================  ======================
failure                              handling                                    surfaces as
===================================  ==========================================  ======================
connection refused / reset, timeout  retried ``max_retries`` times, backoff      :class:`JudgeConnectionError`
HTTP 5xx or 429                      retried likewise                            :class:`JudgeHTTPError`
other HTTP 4xx                       not retried (the request is wrong)          :class:`JudgeHTTPError`
an answer that does not parse or     asked again ``parse_retries`` times         :class:`JudgeParseError`
fit the schema, a body that is not
a chat completion
===================================  ==========================================  ======================

Answers are cached in SQLite (:class:`~visioncreator.evals.judge.cache.JudgeCache`), keyed by the
model, the prompt, the digests of the images and the schema: asking the same thing twice costs one
request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from visioncreator.evals.errors import EvalsError
from visioncreator.evals.judge.cache import JudgeCache
from visioncreator.evals.judge.request import JudgeAnswer, JudgeRequest
from visioncreator.policy import ClosingClient
from visioncreator.tool_servers import sniff_format

__all__ = [
    "JudgeClient",
    "JudgeConnectionError",
    "JudgeError",
    "JudgeHTTPError",
    "JudgeParseError",
    "JudgeSettings",
    "reason_pattern",
    "yes_no_model",
]

T = TypeVar("T", bound=BaseModel)

_RETRYABLE = (httpx.TransportError,)  # connect/read/write errors and timeouts, protocol errors
_MAX_RAW_CHARS = 300


class JudgeError(EvalsError):
    """Base of the judge client's errors (raised after the client's own retries)."""


class JudgeConnectionError(JudgeError):
    """The server could not be reached, or stopped answering, on every attempt."""


class JudgeHTTPError(JudgeError):
    """The server answered with an HTTP error (the last one, after any retries)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"judge server answered HTTP {status}: {message}")
        self.status = status


class JudgeParseError(JudgeError):
    """Every answer was unparseable or did not fit the schema; ``raw`` is the last one."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True, kw_only=True)
class JudgeSettings:
    """Where the judge is served and how hard to try."""

    base_url: str
    """API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended)."""
    model: str
    """Model name sent with every request; part of the cache key."""
    api_key: str | None = field(default=None, repr=False)
    """Bearer token, when the server wants one."""
    timeout_s: float = 120.0
    """Longest wait for one answer."""
    connect_timeout_s: float = 10.0
    """Longest wait to connect."""
    max_retries: int = 3
    """Retries after a transport error, an HTTP 5xx or a 429."""
    parse_retries: int = 2
    """Extra requests after an answer that does not parse or fit the schema."""
    backoff_s: float = 0.5
    """First retry delay; doubled per retry, with jitter."""
    backoff_max_s: float = 8.0
    """Longest retry delay."""
    max_tokens: int = 512
    """Most tokens per answer."""
    temperature: float = 0.0
    """Sampling temperature (0: the same question gets the same answer where the server allows)."""
    seed: int | None = 0
    """Sampling seed sent with every request; ``None`` sends none."""
    strict: bool = True
    """``json_schema.strict`` in ``response_format``."""
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    """Extra request fields (merged last)."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if self.max_retries < 0 or self.parse_retries < 0:
            raise ValueError("max_retries and parse_retries must be at least 0")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be positive")


def reason_pattern(max_chars: int) -> str:
    """A regex for a free-text reason of at most ``max_chars`` plain characters.

    Structured-output servers bound a string only through its pattern (vLLM rejects ``maxLength``
    together with ``pattern``); without a bound a small model may write until ``max_tokens``.
    """
    return rf"^[A-Za-z0-9 ,.;:!?'()/_-]{{0,{max_chars}}}$"


def _data_uri(image: bytes) -> str:
    fmt = sniff_format(image)
    if fmt is None:
        raise ValueError("a judge image must be a PNG, JPEG or WEBP file (checked by magic bytes)")
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(image).decode()}"


def _answer_text(body: bytes) -> str:
    """The message content of a chat completion body; ``ValueError`` when it is not one."""
    data = json.loads(body)
    content = data["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise ValueError("the answer has no text content")
    text = content.strip()
    if text.startswith("```"):  # some servers fence JSON even under response_format
        text = text.strip("`").removeprefix("json").strip()
    return text


class JudgeClient(ClosingClient):
    """An OpenAI-compatible chat endpoint asked for structured answers.

    Use as an async context manager, or call :meth:`aclose`. Safe to share between concurrent
    tasks. ``requests`` counts HTTP requests sent.

    Args:
        settings: Endpoint, model and retry settings.

    """

    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self.requests = 0
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            s = self.settings
            headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
            timeout = httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s)
            self._client = httpx.AsyncClient(base_url=s.base_url.rstrip("/"), timeout=timeout, headers=headers)
        return self._client

    def body(self, request: JudgeRequest, schema: Mapping[str, Any]) -> dict[str, Any]:
        """The chat completion request body for ``request``."""
        s = self.settings
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        if request.images:
            content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
            content += [{"type": "image_url", "image_url": {"url": _data_uri(i)}} for i in request.images]
            messages.append({"role": "user", "content": content})
        else:
            messages.append({"role": "user", "content": request.prompt})
        body: dict[str, Any] = {
            "model": s.model,
            "messages": messages,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": request.name, "schema": dict(schema), "strict": s.strict},
            },
        }
        if s.seed is not None:
            body["seed"] = s.seed
        body.update(s.extra_body)
        return body

    async def ask(self, request: JudgeRequest, output: type[T], *, cache: JudgeCache | None = None) -> JudgeAnswer[T]:
        """Ask one question; the answer parsed into ``output``.

        Raises:
            JudgeConnectionError, JudgeHTTPError, JudgeParseError: see the module docstring.
            ValueError: An image is not a PNG, JPEG or WEBP file.

        """
        model = self.settings.model
        schema = output.model_json_schema()
        key = JudgeCache.key(model, request, schema)
        if cache is not None:
            stored = await cache.get(key)
            if stored is not None:
                try:
                    return JudgeAnswer(output.model_validate_json(stored), True, model, stored, 0)
                except ValidationError:  # written by an older model class under the same schema: ask again
                    pass
        body = self.body(request, schema)
        sent = 0
        raw = ""
        problem = ""
        for _ in range(self.settings.parse_retries + 1):
            data, tries = await self._post(body)
            sent += tries
            try:
                raw = _answer_text(data)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raw, problem = data.decode("utf-8", "replace"), f"not a chat completion ({type(exc).__name__}: {exc})"
                continue
            try:
                value = output.model_validate_json(raw)
            except ValidationError as exc:
                problem = f"does not fit the {request.name} schema: {exc.errors(include_url=False)[0]['msg']}"
                continue
            if cache is not None:
                await cache.put(key, model, raw)
            return JudgeAnswer(value, False, model, raw, sent)
        raise JudgeParseError(
            f"judge answer {problem}, after {self.settings.parse_retries + 1} answers; last: {raw[:_MAX_RAW_CHARS]!r}",
            raw,
        )

    async def _post(self, body: dict[str, Any]) -> tuple[bytes, int]:
        """POST with retries; the 200 body and the number of requests it took."""
        s = self.settings
        last: JudgeError | None = None
        for attempt in range(s.max_retries + 1):
            if attempt:
                delay = min(s.backoff_max_s, s.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
            self.requests += 1
            try:
                response = await self._http().post("/chat/completions", json=body)
            except _RETRYABLE as exc:
                last = JudgeConnectionError(
                    f"judge server {s.base_url} unreachable after {attempt + 1} tries: {type(exc).__name__}: {exc}"
                )
                continue
            if response.status_code == 200:
                return response.content, attempt + 1
            error = JudgeHTTPError(response.status_code, _error_message(response))
            if response.status_code < 500 and response.status_code != 429:
                raise error
            last = error
        assert last is not None
        raise last


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("message", data)
    except (ValueError, AttributeError, KeyError, TypeError):
        message = response.text
    return str(message)[:_MAX_RAW_CHARS]


def yes_no_model(name: str, questions: int) -> type[BaseModel]:
    """An answer model with one ``"yes"``/``"no"`` field per question, named ``q1`` ... ``qN``."""
    fields: dict[str, Any] = {f"q{i}": (Literal["yes", "no"], ...) for i in range(1, questions + 1)}
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)
