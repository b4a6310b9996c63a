"""``TokenPolicy``: a served policy that sends token ids and gets token ids back (vLLM ``/v1/completions``).

RL trains on the ids a turn was sampled as, and each turn's prompt must begin with the previous
turn's prompt and completion ids. Over the chat endpoint the server re-tokenizes the whole
conversation every turn, and a sampled token sequence is often not the tokenizer's own split of
its text (a random or small model spells ``<plan>`` in pieces; a completion cut at ``max_tokens``
has no end-of-turn token), so the chain breaks. This back end renders the conversation with the
model's chat template here, with the same tokenizer, and stitches: when a request continues a turn
this policy sampled, its prompt is *that turn's prompt ids + its completion ids + the tokens of
the rest of the rendering* (the rest starts at the template's end-of-turn token, dropped when the
completion already ends with it). The ids go to the server as the prompt; the completion's ids
and log-probabilities come back (``return_token_ids``). What the trainer recomputes on the
recorded ids is then what the server computed, up to floating point (without a structured-output
constraint: with one, vLLM reports the log-probabilities of the masked distribution).

Text format only (``<tool_call>`` tags; native tool calls need the chat endpoint's parser); images
are not sent (a text policy reads handles and inspections). Errors are those of
:class:`~visioncreator.policy.openai.OpenAIPolicy`, without its retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from visioncreator.policy.chat_template import chat_messages, tool_dicts
from visioncreator.policy.errors import PolicyConnectionError, PolicyResponseError, PolicyTimeoutError
from visioncreator.policy.format import parse_turn
from visioncreator.policy.openai.client import ClosingClient
from visioncreator.policy.openai.policy import turn_seed
from visioncreator.policy.openai.response import http_error, json_object, read_body, read_error_body
from visioncreator.policy.openai.settings import OpenAIPolicySettings
from visioncreator.policy.types import Message, PolicyRequest, PolicyTurn

__all__ = ["TokenPolicy"]


class TokenPolicy(ClosingClient):
    """A policy served by vLLM over ``/v1/completions``, prompts sent as stitched token ids (see the module docstring).

    Use as an async context manager, or call :meth:`aclose`. Safe to share between concurrent runs.

    Args:
        settings: Endpoint and sampling (``base_url``, ``model``, ``temperature``, ``top_p``,
            ``max_tokens``, ``seed``, ``timeout_s``, ``extra_body``, ``append_node_instruction``).
        tokenizer: The served model's tokenizer (its chat template renders the prompts).
        render_tools: Pass ``request.tools`` to the template (as ``LocalPolicySettings.render_tools``).
        stitch_cache_size: Sampled turns remembered for stitching.
        extra_body: Per-request additions to the body (e.g. a structured-output constraint per node).
        group_window_s: Turns asked for the same prompt within this many seconds of the first go
            to the server as one request with ``n`` (a GRPO group's shared first turn: one prefill,
            one request); the callers are ordered by run seed, the request carries the lowest, and
            the k-th caller gets the k-th choice (so a seeded run gets the same turns whatever order
            its members arrived in). 0: every turn is its own request.

    """

    def __init__(
        self,
        settings: OpenAIPolicySettings,
        tokenizer: Any,
        *,
        render_tools: bool = False,
        stitch_cache_size: int = 4096,
        extra_body: Callable[[PolicyRequest], Mapping[str, Any]] | None = None,
        group_window_s: float = 0.0,
    ) -> None:
        self.settings = settings
        self.name = settings.policy_name
        self._tok = tokenizer
        self._special = frozenset(int(i) for i in tokenizer.all_special_ids)
        self._render_tools = render_tools
        self._cache_size = stitch_cache_size
        self._extra = extra_body
        self._stitched: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._window = group_window_s
        self._pending: dict[str, _Group] = {}
        self.requests = 0
        """Requests sent to the server so far."""
        self.turns = 0
        """Turns returned so far (more than :attr:`requests` when turns were grouped)."""

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        """One assistant turn."""
        return (await self.sample(request, 1))[0]

    async def sample(self, request: PolicyRequest, n: int) -> list[PolicyTurn]:
        """``n`` independent turns for the same request, in one request (``n=``), in choice order.

        Raises:
            ValueError: ``n`` is below 1.
            PolicyConnectionError, PolicyHTTPError, PolicyTimeoutError, PolicyResponseError: as
                :class:`~visioncreator.policy.openai.OpenAIPolicy`.

        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        text, ids = self.prompt(request)
        if self._window <= 0 or n > 1:
            return await self._sample(request, text, ids, n)
        key = _key(f"{request.node}\x1f{text}")
        group = self._pending.get(key)
        if group is None:
            group = self._pending[key] = _Group(request, text, ids)
            group.task = asyncio.create_task(self._flush(key, group))
        waiter: asyncio.Future[PolicyTurn] = asyncio.get_running_loop().create_future()
        group.waiters.append((request.seed if request.seed is not None else -1, waiter))
        return [await waiter]

    async def _flush(self, key: str, group: _Group) -> None:
        """After the window, one request for everyone waiting on ``group``; each gets a choice."""
        await asyncio.sleep(self._window)
        del self._pending[key]
        try:
            # Ordered by run seed: the same members get the same choices, whatever order they came in.
            group.waiters.sort(key=lambda item: item[0])
            request = (
                group.request.model_copy(update={"seed": group.waiters[0][0]})
                if group.waiters[0][0] >= 0
                else group.request
            )
            turns = await self._sample(request, group.text, group.ids, len(group.waiters))
        except BaseException as exc:
            for _, waiter in group.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, waiter), turn in zip(group.waiters, turns, strict=True):
            if not waiter.done():
                waiter.set_result(turn)

    async def _sample(self, request: PolicyRequest, text: str, ids: tuple[int, ...], n: int) -> list[PolicyTurn]:
        started = time.perf_counter()
        self.requests += 1
        data = await self._post(self._body(request, ids, n))
        choices = data.get("choices")
        if not isinstance(choices, list) or len(choices) < n:
            raise PolicyResponseError(f"expected {n} choice(s) from {self._url}, got {str(choices)[:200]}")
        latency = time.perf_counter() - started
        turns = []
        for choice in sorted(choices, key=lambda c: int(c.get("index", 0)))[:n]:
            completion, logprobs = _choice_ids(choice)
            content = str(choice.get("text") or "")
            self._remember(text + content, (*ids, *completion))
            turns.append(
                PolicyTurn(
                    text=content,
                    parsed=parse_turn(content),
                    model=str(data.get("model") or self.settings.model),
                    prompt_token_ids=tuple(ids),
                    completion_token_ids=completion,
                    logprobs=logprobs,
                    latency_s=latency,
                )
            )
        self.turns += len(turns)
        return turns

    def prompt(self, request: PolicyRequest) -> tuple[str, tuple[int, ...]]:
        """The rendered prompt and its ids, stitched onto a remembered turn where the conversation continues one."""
        text = self._render(request, request.messages, request.node)
        for j in range(len(request.messages) - 1, -1, -1):
            message = request.messages[j]
            if message.role != "assistant":
                continue
            head = self._render(request, request.messages[:j], message.node) + message.content
            ids = self._stitched.get(_key(head))
            if ids is None or not text.startswith(head):
                continue
            self._stitched.move_to_end(_key(head))
            rest = self._encode(text[len(head) :])
            if ids and rest and ids[-1] == rest[0] and ids[-1] in self._special:
                rest = rest[1:]  # the template closes the turn with the stop token the model wrote
            return text, (*ids, *rest)
        return text, tuple(self._encode(text))

    # ---- internals ---------------------------------------------------------------------------

    @property
    def _url(self) -> str:
        return f"{self.settings.base_url.rstrip('/')}/completions"

    def _render(self, request: PolicyRequest, messages: Sequence[Message], node: Any) -> str:
        chat = chat_messages(messages, node, instructions=self.settings.append_node_instruction)
        tools = tool_dicts(request.tools) if self._render_tools and request.tools else None
        return str(self._tok.apply_chat_template(chat, tools=tools, tokenize=False, add_generation_prompt=True))

    def _encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def _remember(self, text: str, ids: tuple[int, ...]) -> None:
        if self._cache_size <= 0:
            return
        self._stitched[_key(text)] = ids
        self._stitched.move_to_end(_key(text))
        while len(self._stitched) > self._cache_size:
            self._stitched.popitem(last=False)

    def _body(self, request: PolicyRequest, ids: Sequence[int], n: int) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "model": s.model,
            "prompt": list(ids),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "n": n,
            "logprobs": 0,
            "return_token_ids": True,
            "skip_special_tokens": True,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        seed = turn_seed(s.seed, request.seed, request)
        if seed is not None:
            body["seed"] = seed
        body.update(s.extra_body)
        if self._extra is not None:
            body.update(self._extra(request))
        return body

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()  # pooled connections belong to the loop that opened them
        if self._client is None or self._loop is not loop:
            s = self.settings
            headers = {"Accept-Encoding": "identity"} | ({"Authorization": f"Bearer {s.api_key}"} if s.api_key else {})
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s),
                limits=httpx.Limits(max_connections=s.max_connections),
                trust_env=s.trust_env,
            )
            self._loop = loop
        return self._client

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        s, url = self.settings, self._url
        try:
            async with asyncio.timeout(s.timeout_s + s.connect_timeout_s):
                async with self._http().stream("POST", url, json=body) as response:
                    if response.status_code != 200:
                        error = await read_error_body(response, s.max_error_body_bytes)
                        raise http_error(response.status_code, error, response.reason_phrase, attempts=1, url=url)
                    raw = await read_body(response, s.max_response_bytes, url)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise PolicyTimeoutError(
                f"the model server at {url} did not answer within timeout_s={s.timeout_s}"
            ) from exc
        except httpx.TransportError as exc:
            raise PolicyConnectionError(f"cannot reach the model server at {url}: {type(exc).__name__}: {exc}") from exc
        return json_object(raw, url)


@dataclass
class _Group:
    """Turns waiting for one shared request."""

    request: PolicyRequest
    text: str
    ids: tuple[int, ...]
    waiters: list[tuple[int, asyncio.Future[PolicyTurn]]] = field(default_factory=list)
    """(run seed, -1 for none; the caller's future)."""
    task: asyncio.Task[None] | None = None


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _choice_ids(choice: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A completion choice's token ids and log-probabilities (vLLM: ``token_ids``, ``logprobs.token_logprobs``)."""
    ids = choice.get("token_ids")
    logprobs = choice.get("logprobs")
    values = logprobs.get("token_logprobs") if isinstance(logprobs, Mapping) else None
    if not isinstance(ids, list) or not isinstance(values, list) or len(ids) != len(values):
        raise PolicyResponseError(
            f"a choice lacks token_ids and logprobs of one length (vLLM, return_token_ids): {str(choice)[:200]}"
        )
    return tuple(int(i) for i in ids), tuple(float(v) for v in values)
