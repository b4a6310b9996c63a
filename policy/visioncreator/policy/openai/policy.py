r"""The ``openai`` policy: any OpenAI-compatible chat endpoint over httpx (vLLM in production).

One request per turn (``respond``) or per group of samples (``sample(request, n)``: one request
with ``n``). With vLLM, each turn also carries the prompt and completion token ids and the
completion tokens' log-probabilities, which RL needs. ``respond_streaming`` asks for the same
turn over the streaming API and hands its text on token by token (the graph uses it only while
someone listens for tokens); the turn it records is the same.

What goes wrong, and what happens then:

==============================  ==================================  ========================================
failure                         handling                            surfaces as
==============================  ==================================  ========================================
connection refused / reset,     retried ``max_retries`` times,      :class:`PolicyConnectionError`
connect timeout                 exponential backoff                 (a ``ConnectionError``)
HTTP 5xx                        retried likewise                    :class:`PolicyHTTPError` (status, message)
no answer within ``timeout_s``  not retried (the generation would   :class:`PolicyTimeoutError`
                                start over)                         (a ``TimeoutError``)
HTTP 400 "prompt too long"      not retried                         ``on_context_overflow="turn"`` (default):
                                                                    an empty turn whose parse error says so;
                                                                    ``"raise"``: :class:`PolicyContextLengthError`
other HTTP 4xx                  not retried                         :class:`PolicyHTTPError` with the server's
                                                                    message
200 with a body that is not a   not retried                         :class:`PolicyResponseError`
chat completion
a body over                     not retried; reading stops at the   :class:`PolicyResponseTooLargeError`
``max_response_bytes``          cap (never buffered whole)          (a :class:`PolicyResponseError`)
a choice over ``max_tokens``    not retried (the server ignores     :class:`PolicyResponseTooLargeError`
(token ids, log-probabilities,  the limit: it would again)
usage, or text longer than
``max_tokens`` x
``max_chars_per_token``)
==============================  ==================================  ========================================

Why: a raised error fails the graph run, and the run resumes from its checkpoint (every finished
turn and tool call is kept) once the server is healthy again: that is right for an outage, a bad
deployment or a misconfiguration, which the model can do nothing about. A prompt that outgrew the
context is different: resuming would hit it again, so by default it becomes a turn the model
"wrote" empty, with a ``FormatError`` (code ``empty``) that names the cause; the graph shows it
as an error observation and ends the run by its format-error budget, trajectory intact. Every
raised error derives from a type LangGraph's default retry policy does not retry (this back end
has already retried what is worth retrying).

A read timeout is never retried, so one turn normally ends within ``timeout_s`` plus
``(max_retries + 1) * connect_timeout_s`` plus the backoff delays (only slow 5xx answers, each
retried, can stretch it to ``(max_retries + 1) * (timeout_s + connect_timeout_s)``). Keep that
under the graph's ``AgentConfig.policy_timeout_s`` (300 s), or the graph's own timeout fires first
(a plain ``TimeoutError``, with the same fail-and-resume outcome).

A lone surrogate in the answer (JSON's ``\ud800`` escape decodes to one; UTF-8 cannot hold it) is
not an error of the server: the parser reports it as a ``bad_unicode`` format error the model sees,
and the turn's text keeps U+FFFD in its place, so that records and the next request serialize.

In native tool mode the turn text is the canonical rewrite (content, then one ``<tool_call>`` per
native call), while ``completion_token_ids`` and ``logprobs`` are the server's tokens for what
the model actually emitted (e.g. Hermes-style ``<tool_call>`` JSON): train on the token ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import OrderedDict
from typing import Any

import httpx

from visioncreator.policy.errors import (
    PolicyConnectionError,
    PolicyContextLengthError,
    PolicyHTTPError,
    PolicyTimeoutError,
)
from visioncreator.policy.openai.client import ClosingClient
from visioncreator.policy.openai.messages import ImageSource, encode_image, native_tools, to_chat_messages
from visioncreator.policy.openai.response import completion_turns, http_error, json_object, read_body, read_error_body
from visioncreator.policy.openai.settings import OpenAIPolicySettings
from visioncreator.policy.openai.stream import read_stream
from visioncreator.policy.types import FormatError, ParsedTurn, PolicyRequest, PolicyTurn, TextSink

__all__ = ["OpenAIPolicy", "turn_seed"]

# Errors after which the request may never have reached the model: safe and useful to retry.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def turn_seed(base: int | None, run_seed: int | None, request: PolicyRequest) -> int | None:
    """The seed sent for one turn: derived from both seeds, the node and the conversation length.

    The same run seed gives every turn of a run a different but reproducible seed (a resumed run
    re-sends the same one); ``None`` when neither seed is set.
    """
    if base is None and run_seed is None:
        return None
    key = f"{base}|{run_seed}|{request.node}|{len(request.messages)}"
    # 31 bits: vLLM takes int64, but llama.cpp and some hosted APIs take only 32-bit seeds.
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") >> 1


class OpenAIPolicy(ClosingClient):
    """A policy served by an OpenAI-compatible chat endpoint.

    Use as an async context manager, or call :meth:`aclose` when done. Safe to share between
    concurrent runs.

    Args:
        settings: Endpoint, sampling, retry and image settings.
        images: Where image bytes come from; without it (or with ``send_images=False``) images are
            not sent, and the model knows them only by the handles named in the text.

    """

    def __init__(self, settings: OpenAIPolicySettings, *, images: ImageSource | None = None) -> None:
        self.settings = settings
        self.name = settings.policy_name
        self._images = images
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uris: OrderedDict[str, str] = OrderedDict()

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        """One assistant turn. Raises only the transport errors in the module docstring."""
        return (await self.sample(request, 1))[0]

    async def sample(self, request: PolicyRequest, n: int) -> list[PolicyTurn]:
        """``n`` independent turns for the same request, in one request (``n=``), in choice order.

        Raises:
            ValueError: ``n`` is below 1.
            PolicyConnectionError, PolicyHTTPError, PolicyTimeoutError, PolicyResponseError: see
                the module docstring.

        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        return await self._turns(request, n, None)

    async def respond_streaming(self, request: PolicyRequest, on_text: TextSink) -> PolicyTurn:
        """One assistant turn over the streaming API (``"stream": true``), its text sent to ``on_text`` as it comes.

        The turn is recorded as :meth:`respond` records it (the same token ids, log-probabilities
        and checks); the pieces concatenate to its text. In native tool mode the calls are not
        streamed: their canonical ``<tool_call>`` text is the last piece. Raises what
        :meth:`respond` raises; a stream that breaks off after text was sent is not retried here
        (:class:`PolicyConnectionError`).
        """
        sent: list[str] = []

        async def on_content(piece: str) -> None:
            sent.append(piece)
            await on_text(piece)

        turn = (await self._turns(request, 1, on_content))[0]
        done = "".join(sent)
        if turn.text.startswith(done) and len(turn.text) > len(done):
            await on_text(turn.text[len(done) :])
        return turn

    async def _turns(self, request: PolicyRequest, n: int, on_content: TextSink | None) -> list[PolicyTurn]:
        started = time.perf_counter()
        body = await self._body(request, n)
        if on_content is not None:
            body.update(stream=True, stream_options={"include_usage": True})
        try:
            data = await self._post(body, on_content)
        except PolicyContextLengthError as exc:
            if self.settings.on_context_overflow == "raise":
                raise
            return [self._overflow_turn(exc, time.perf_counter() - started)] * n
        # extra_body may have overridden max_tokens: check against what was sent.
        max_tokens = body.get("max_tokens")
        limit = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else self.settings.max_tokens
        latency = time.perf_counter() - started
        return completion_turns(data, n, settings=self.settings, max_tokens=limit, latency=latency)

    # ---- request ---------------------------------------------------------------------------

    async def _body(self, request: PolicyRequest, n: int) -> dict[str, Any]:
        s = self.settings
        uris = await self._image_uris(request)
        body: dict[str, Any] = {
            "model": s.model,
            "messages": await to_chat_messages(request.messages, request.node, s, uris),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "n": n,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        seed = turn_seed(s.seed, request.seed, request)
        if seed is not None:
            body["seed"] = seed
        if s.logprobs:
            body["logprobs"] = True
            if s.top_logprobs:
                body["top_logprobs"] = s.top_logprobs
        if s.return_token_ids:
            body["return_token_ids"] = True
        if s.tool_mode == "native" and request.tools and request.node in s.native_tool_nodes:
            body["tools"] = native_tools(request.tools)
            body["tool_choice"] = s.tool_choice if request.node == "act" else "auto"
        body.update(s.extra_body)
        return body

    async def _image_uris(self, request: PolicyRequest) -> dict[str, str]:
        if self._images is None or not self.settings.send_images:
            return {}
        out: dict[str, str] = {}
        for handle in dict.fromkeys(h for m in request.messages for h in m.images):
            uri = self._uris.get(handle)
            if uri is None:
                uri = await asyncio.to_thread(encode_image, await self._images.read(handle), self.settings)
                if self.settings.image_cache_size:
                    self._uris[handle] = uri
                    while len(self._uris) > self.settings.image_cache_size:
                        self._uris.popitem(last=False)
            else:
                self._uris.move_to_end(handle)
            out[handle] = uri
        return out

    def _http(self) -> httpx.AsyncClient:
        # A client's pooled connections belong to the event loop that opened them.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            s = self.settings
            # identity: the body cap counts the bytes that arrive, and a compressed body could
            # inflate far past it within one chunk.
            headers = {"Accept-Encoding": "identity"}
            if s.api_key:
                headers["Authorization"] = f"Bearer {s.api_key}"
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s),
                limits=httpx.Limits(max_connections=s.max_connections),
                trust_env=s.trust_env,
            )
            self._loop = loop
        return self._client

    def _backoff(self, attempt: int) -> float:
        delay = min(self.settings.backoff_s * 2.0**attempt, self.settings.backoff_max_s)
        return float(delay * (1 + 0.1 * random.random()))  # jitter: concurrent runs do not retry in lockstep

    async def _attempt(
        self, client: httpx.AsyncClient, body: dict[str, Any], on_content: TextSink | None
    ) -> tuple[int, bytes | dict[str, Any], str]:
        """One request: the status, the body (bounded; a streamed one already folded) and the reason phrase."""
        s = self.settings
        async with client.stream("POST", s.chat_url, json=body) as response:
            if response.status_code != 200:
                error = await read_error_body(response, s.max_error_body_bytes)
                return response.status_code, error, response.reason_phrase
            if on_content is None:
                return 200, await read_body(response, s.max_response_bytes, s.chat_url), ""
            return 200, await read_stream(response, s.max_response_bytes, s.chat_url, on_content), ""

    async def _post(self, body: dict[str, Any], on_content: TextSink | None = None) -> dict[str, Any]:
        s = self.settings
        client = self._http()
        sent = False
        if on_content is not None:
            sink = on_content

            async def on_piece(piece: str) -> None:
                nonlocal sent
                sent = True
                await sink(piece)

            on_content = on_piece
        # One attempt is bounded as a whole: httpx's read timeout bounds each read, not a server
        # that trickles bytes.
        bound = s.timeout_s + s.connect_timeout_s
        attempts = s.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                status, raw, reason = await asyncio.wait_for(self._attempt(client, body, on_content), timeout=bound)
            except _RETRYABLE as exc:
                if sent:  # a stream that already sent text cannot take it back: not retried
                    raise PolicyConnectionError(
                        f"the stream from {s.chat_url} broke off: {type(exc).__name__}: {exc}"
                    ) from exc
                if last:
                    raise PolicyConnectionError(
                        f"cannot reach the model server at {s.chat_url} after {attempts} attempts: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            except (httpx.TimeoutException, TimeoutError) as exc:
                raise PolicyTimeoutError(
                    f"the model server at {s.chat_url} did not answer within timeout_s={s.timeout_s}"
                ) from exc
            except httpx.TransportError as exc:
                raise PolicyConnectionError(
                    f"transport error talking to {s.chat_url}: {type(exc).__name__}: {exc}"
                ) from exc
            else:
                if isinstance(raw, dict):
                    return raw
                if status == 200:
                    return json_object(raw, s.chat_url)
                if status < 500 or last:
                    raise http_error(status, raw, reason, attempts=attempt + 1, url=s.chat_url)
            await asyncio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- response --------------------------------------------------------------------------

    def _overflow_turn(self, exc: PolicyHTTPError, latency: float) -> PolicyTurn:
        error = FormatError(
            code="empty", message=f"no turn: the conversation is longer than the model's context ({exc.server_message})"
        )
        return PolicyTurn(text="", parsed=ParsedTurn(errors=(error,)), model=self.settings.model, latency_s=latency)
