"""A small LLM judge client: one OpenAI-compatible chat request in, one structured answer out.

Shared by the vision judge of :mod:`visioncreator.evals.judge` and the plan reward of
:mod:`visioncreator.rl.rewards_judge`. The answer's shape is a pydantic model; its JSON schema
goes to the server as ``response_format`` (``json_schema``), so a server with structured output
(vLLM with xgrammar, hosted APIs) can only write a parseable answer.

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

Answers are cached in SQLite (:class:`JudgeCache`), keyed by the model, the prompt, the digests of
the images and the schema: asking the same thing twice costs one request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from visioncreator.tool_servers.checklist_models import CheckItem
from visioncreator.tool_servers.decode import sniff_format

__all__ = [
    "JudgeAnswer",
    "JudgeCache",
    "JudgeClient",
    "JudgeConnectionError",
    "JudgeError",
    "JudgeHTTPError",
    "JudgeParseError",
    "JudgeRequest",
    "JudgeSettings",
    "checklist_question",
    "reason_pattern",
    "yes_no_model",
]

T = TypeVar("T", bound=BaseModel)

_RETRYABLE = (httpx.TransportError,)  # connect/read/write errors and timeouts, protocol errors
_MAX_RAW_CHARS = 300


class JudgeError(RuntimeError):
    """Base of the judge client's errors (a ``RuntimeError``: the client already retried what helps)."""


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


class JudgeRequest(BaseModel):
    """One question to the judge: a system prompt, a user prompt and the images it is about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Name of the answer schema (``json_schema.name``)."""
    prompt: str
    system: str = ""
    images: tuple[bytes, ...] = ()
    """Image files (PNG, JPEG or WEBP), sent as data URIs after the prompt."""


@dataclass(frozen=True)
class JudgeAnswer(Generic[T]):
    """A parsed answer, and whether it came from the cache."""

    value: T
    cached: bool
    model: str
    raw: str
    requests: int
    """HTTP requests this answer took (0 when cached)."""


def reason_pattern(max_chars: int) -> str:
    """A regex for a free-text reason of at most ``max_chars`` plain characters.

    Structured-output servers bound a string only through its pattern (vLLM rejects ``maxLength``
    together with ``pattern``); without a bound a small model may write until ``max_tokens``.
    """
    return rf"^[A-Za-z0-9 ,.;:!?'()/_-]{{0,{max_chars}}}$"


def checklist_question(item: CheckItem) -> str:
    """A checklist item as a yes/no question about one image."""
    subject = item.subject or "the main subject"
    if item.check == "object":
        return f"Is there at least one {subject}?"
    if item.check == "count":
        return f"Are there exactly {item.value} {subject} (count every {subject})?"
    if item.check == "color":
        return f"Is every {subject} {item.value}?"
    if item.check == "position":
        return f"Is a {subject} {(item.relation or 'next_to').replace('_', ' ')} a {item.other}?"
    if item.check == "text":
        return f'Does the image show the text "{item.value}", spelled exactly?'
    if item.check == "style":
        return f"Is the image in {str(item.value).replace('_', ' ')} style?"
    if item.check == "absent":
        return f"Is there no {subject} at all?"
    if item.check == "preserved":
        return f"Apart from what the instruction changes, is input image {item.reference} kept as it was?"
    return f"Is the {subject} the same individual as in output image {item.reference}?"


class JudgeCache:
    """Judge answers in SQLite, keyed by model, prompt, image digests and schema.

    Safe to share between tasks of one event loop and between processes (WAL mode). Only answers
    that parsed are stored.

    Args:
        path: Database file (created with its folder), or ``":memory:"``.

    """

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if str(path) != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, answer TEXT NOT NULL, "
                "created REAL NOT NULL)"
            )
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model: str, request: JudgeRequest, schema: Mapping[str, Any]) -> str:
        """The cache key of a request: a SHA-256 over model, prompts, image digests and schema."""
        parts = {
            "model": model,
            "system": request.system,
            "prompt": request.prompt,
            "images": [hashlib.sha256(image).hexdigest() for image in request.images],
            "name": request.name,
            "schema": schema,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _put(self, key: str, model: str, answer: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, model, answer, created) VALUES (?, ?, ?, ?)",
                (key, model, answer, time.time()),
            )

    async def get(self, key: str) -> str | None:
        """The stored answer text for ``key``, or ``None`` (counted as a hit or a miss)."""
        found = await asyncio.to_thread(self._get, key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    async def put(self, key: str, model: str, answer: str) -> None:
        """Store an answer that parsed."""
        await asyncio.to_thread(self._put, key, model, answer)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


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


class JudgeClient:
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

    async def __aenter__(self) -> JudgeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

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
