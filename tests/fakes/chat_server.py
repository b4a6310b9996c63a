"""A fault-injecting fake of an OpenAI-compatible chat server, served over real HTTP on loopback.

Each test scripts what the next requests get: a completion (text or native tool calls, with
vLLM-style token ids and log-probabilities), an HTTP error, a garbage body, a slow answer, or a
huge body streamed chunk by chunk; with ``"stream": true`` a completion comes as vLLM streams it
(server-sent events, a chunk per character), or scripted :class:`Events`. The server records every
request body so tests can assert what was sent and how often, and how many bytes of a streamed
body it got out before the client hung up.

Answers are ASCII JSON (``ensure_ascii``), as vLLM's are: a lone surrogate in a scripted text or
tool call arrives JSON-escaped (``\\ud800``), which is how a real server delivers one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Body = dict[str, Any]
Texts = list[str] | Callable[[Body], list[str] | str]


@dataclass(frozen=True)
class Completion:
    """A 200 chat completion with ``n`` choices (``texts`` cycled; a callable sees the request body)."""

    texts: Texts = field(default_factory=lambda: ["<think>ok</think>"])
    tool_calls: list[dict[str, Any]] | None = None
    """Native tool calls put on every choice (content then ``None`` unless ``texts`` is non-empty)."""
    token_ids: bool = True
    logprobs: bool = True
    usage: bool = True
    """Send ``usage`` (``completion_tokens``: one token per emitted character, all choices together)."""
    delay_s: float = 0.0


@dataclass(frozen=True)
class Status:
    """An HTTP error in vLLM's JSON error shape."""

    code: int
    message: str = "boom"


@dataclass(frozen=True)
class Raw:
    """Any status and body, e.g. a 200 that is not JSON."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class Stream:
    """A 200 of ``size`` bytes sent ``chunk`` bytes at a time: the start of a chat completion whose
    content never ends (a model that ignored ``max_tokens``), as much as the client will read."""

    size: int
    chunk: int = 64 * 1024
    declare_length: bool = False
    """Send ``Content-Length`` (else the body is chunked)."""


@dataclass(frozen=True)
class Events:
    """A 200 ``text/event-stream`` answer (``"stream": true``): one ``data:`` event per item (a dict
    as JSON), then ``data: [DONE]``; with ``cut``, the connection drops after the items instead."""

    data: list[Body | str]
    cut: bool = False


Behaviour = Completion | Status | Raw | Stream | Events


def token_ids_of(text: str) -> list[int]:
    """The fake tokenizer: one token per character."""
    return [ord(c) % 50_000 for c in text]


def logprobs_of(text: str) -> list[float]:
    """The fake log-probabilities: a fixed pattern per character position."""
    return [-0.125 * (i % 4) for i in range(len(text))]


def prompt_ids_of(body: Body) -> list[int]:
    """The fake prompt token ids: one per message, then the length of all the text."""
    messages = body.get("messages", [])
    return [len(messages), len(json.dumps(messages))]


class FakeChatServer:
    """A scripted chat server. ``script`` is consumed one behaviour per request; the last repeats."""

    def __init__(self) -> None:
        self.script: list[Behaviour] = [Completion()]
        self.requests: list[Body] = []
        self._lock = threading.Lock()
        self.port = 0
        self.streamed_bytes = 0
        """Bytes of the last :class:`Stream` body handed to the socket before the client hung up (or all)."""
        self.on_stream_end: Callable[[], None] | None = None
        """Called when a :class:`Stream` body ends: all sent, or the client hung up."""
        self.headers: dict[str, str] = {}
        """Extra headers put on every answer (e.g. a ``content-encoding`` nobody asked for)."""
        self.accept_encodings: list[str] = []
        """The ``Accept-Encoding`` header of every request, in order."""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The API root, as ``OpenAIPolicySettings.base_url`` wants it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def set(self, *behaviours: Behaviour) -> None:
        """Replace the script (and forget recorded requests)."""
        with self._lock:
            self.script = list(behaviours)
            self.requests.clear()
            self.accept_encodings.clear()

    def _next(self, body: Body, request: Request) -> Behaviour:
        with self._lock:
            self.requests.append(body)
            self.accept_encodings.append(request.headers.get("accept-encoding", ""))
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _chat(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": {"message": "bad json", "code": 400}}, status_code=400)
        behaviour = self._next(body, request)
        headers = dict(self.headers)
        if isinstance(behaviour, Status):
            error = {"message": behaviour.message, "type": "Error", "param": None, "code": behaviour.code}
            return JSONResponse({"error": error}, status_code=behaviour.code, headers=headers)
        if isinstance(behaviour, Raw):
            return Response(behaviour.body, behaviour.status, headers, media_type=behaviour.content_type)
        if isinstance(behaviour, Stream):
            if behaviour.declare_length:
                headers["content-length"] = str(behaviour.size)
            return StreamingResponse(self._stream(behaviour, request), media_type="application/json", headers=headers)
        if isinstance(behaviour, Events):
            return StreamingResponse(_events(behaviour), media_type="text/event-stream", headers=headers)
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        if body.get("stream"):
            streamed = Events(_chunks(_completion(body, behaviour)))
            return StreamingResponse(_events(streamed), media_type="text/event-stream", headers=headers)
        # ASCII JSON: a lone surrogate goes out escaped, as vLLM sends it (UTF-8 cannot carry it raw).
        return Response(json.dumps(_completion(body, behaviour)), headers=headers, media_type="application/json")

    async def _stream(self, behaviour: Stream, request: Request) -> AsyncIterator[bytes]:
        self.streamed_bytes = 0
        head = b'{"id":"chatcmpl-fake","object":"chat.completion","choices":[{"index":0,"message":{"content":"'
        filler = b"a" * behaviour.chunk
        sent = 0
        try:
            # uvicorn drops what is sent after a disconnect: stop counting (and sending) then.
            while sent < behaviour.size and not await request.is_disconnected():
                piece = head if sent == 0 else filler[: behaviour.size - sent]
                yield piece
                sent += len(piece)
                self.streamed_bytes = sent
        finally:
            if self.on_stream_end is not None:
                self.on_stream_end()

    @contextmanager
    def running(self) -> Iterator[FakeChatServer]:
        """Serve on a free loopback port in a background thread."""
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only for that proto; with
        # proto 0, Nagle plus the client's delayed ACK add ~40 ms to every answer.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the fake chat server did not start")
            time.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


def _completion(body: Body, behaviour: Completion) -> Body:
    n = int(body.get("n") or 1)
    texts = behaviour.texts(body) if callable(behaviour.texts) else behaviour.texts
    texts = [texts] if isinstance(texts, str) else texts
    choices = []
    emitted_texts = []
    for i in range(n):
        text = texts[i % len(texts)] if texts else ""
        message: Body = {"role": "assistant", "content": text or None}
        emitted = text
        if behaviour.tool_calls is not None:
            message["tool_calls"] = behaviour.tool_calls
            emitted += json.dumps(behaviour.tool_calls)
        emitted_texts.append(emitted)
        choice: Body = {"index": i, "message": message, "finish_reason": "stop"}
        if behaviour.token_ids and body.get("return_token_ids"):
            choice["token_ids"] = token_ids_of(emitted)
        if behaviour.logprobs and body.get("logprobs"):
            content = [
                {"token": c, "logprob": lp, "top_logprobs": []}
                for c, lp in zip(emitted, logprobs_of(emitted), strict=True)
            ]
            choice["logprobs"] = {"content": content}
        choices.append(choice)
    out: Body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": choices,
    }
    if behaviour.usage:
        completion_tokens = sum(len(token_ids_of(emitted)) for emitted in emitted_texts)
        out["usage"] = {
            "prompt_tokens": 2,
            "completion_tokens": completion_tokens,
            "total_tokens": 2 + completion_tokens,
        }
    if behaviour.token_ids and body.get("return_token_ids"):
        out["prompt_token_ids"] = prompt_ids_of(body)
    return out


async def _events(behaviour: Events) -> AsyncIterator[bytes]:
    for item in behaviour.data:
        yield f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n".encode()
    if behaviour.cut:
        # An exception in the body generator makes uvicorn drop the connection mid-body.
        raise ConnectionAbortedError("the fake cuts the stream")
    yield b"data: [DONE]\n\n"


def _chunks(completion: Body) -> list[Body | str]:
    """A completion as vLLM streams it: the prompt ids first, then a chunk per character of each
    choice's content (with its token id and log-probability), the finish, the usage."""
    head = {k: completion[k] for k in ("id", "model") if k in completion}
    out: list[Body | str] = []
    for choice in completion["choices"]:
        first: Body = {**head, "choices": [{"index": choice["index"], "delta": {"role": "assistant", "content": ""}}]}
        if "prompt_token_ids" in completion:
            first["prompt_token_ids"] = completion["prompt_token_ids"]
        out.append(first)
        message = choice["message"]
        logprobs = (choice.get("logprobs") or {}).get("content")
        for i, c in enumerate(message["content"] or ""):
            delta: Body = {"index": choice["index"], "delta": {"content": c}}
            if logprobs is not None:
                delta["logprobs"] = {"content": [logprobs[i]]}
            if "token_ids" in choice:
                delta["token_ids"] = [choice["token_ids"][i]]
            out.append({**head, "choices": [delta]})
        last: Body = {"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}
        if message.get("tool_calls"):  # the calls' tokens (the fake's: their JSON) come with them
            last["delta"] = {"tool_calls": [{"index": k, **c} for k, c in enumerate(message["tool_calls"])]}
            done = len(message["content"] or "")
            if logprobs is not None:
                last["logprobs"] = {"content": logprobs[done:]}
            if "token_ids" in choice:
                last["token_ids"] = choice["token_ids"][done:]
        out.append({**head, "choices": [last]})
    if "usage" in completion:
        out.append({**head, "choices": [], "usage": completion["usage"]})
    return out
