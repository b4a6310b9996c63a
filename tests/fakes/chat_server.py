"""A fault-injecting fake of an OpenAI-compatible chat server, served over real HTTP on loopback.

Each test scripts what the next requests get: a completion (text or native tool calls, with
vLLM-style token ids and log-probabilities), an HTTP error, a garbage body, or a slow answer.
The server records every request body so tests can assert what was sent and how often.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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


Behaviour = Completion | Status | Raw


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

    def _next(self, body: Body) -> Behaviour:
        with self._lock:
            self.requests.append(body)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _chat(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": {"message": "bad json", "code": 400}}, status_code=400)
        behaviour = self._next(body)
        if isinstance(behaviour, Status):
            error = {"message": behaviour.message, "type": "Error", "param": None, "code": behaviour.code}
            return JSONResponse({"error": error}, status_code=behaviour.code)
        if isinstance(behaviour, Raw):
            return Response(behaviour.body, status_code=behaviour.status, media_type=behaviour.content_type)
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        return JSONResponse(_completion(body, behaviour))

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
    for i in range(n):
        text = texts[i % len(texts)] if texts else ""
        message: Body = {"role": "assistant", "content": text or None}
        emitted = text
        if behaviour.tool_calls is not None:
            message["tool_calls"] = behaviour.tool_calls
            emitted += json.dumps(behaviour.tool_calls)
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
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    if behaviour.token_ids and body.get("return_token_ids"):
        out["prompt_token_ids"] = prompt_ids_of(body)
    return out
