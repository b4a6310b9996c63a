"""``OpenAIPolicy.respond_streaming`` against a fault-injecting fake (real HTTP on loopback).

The real server's stream is tested in ``tests/vllm/test_token_streaming.py``; here, what a real
server rarely does: an error event mid-stream, a stream cut off, one that never ends, a lone
surrogate, native tool calls in pieces.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from tests.fakes.chat_server import (
    Completion,
    Events,
    FakeChatServer,
    Stream,
    logprobs_of,
    token_ids_of,
)
from tests.policy.test_openai import PLAN, make_request, make_settings

from visioncreator.policy import (
    OpenAIPolicy,
    PolicyConnectionError,
    PolicyHTTPError,
    PolicyResponseError,
    PolicyResponseTooLargeError,
    PolicyTurn,
    StreamingPolicy,
    ToolCall,
    write_tool_call,
)

PROMPT_IDS = [5, 6, 7]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        yield fake


def events(pieces: list[str], *, finish: bool = True, usage: bool = True) -> list[dict[str, Any] | str]:
    """vLLM's chunks for ``pieces``: a role chunk with the prompt ids, a chunk per piece, the finish, the usage."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake-model"}
    out: list[dict[str, Any] | str] = [
        {
            **base,
            "prompt_token_ids": PROMPT_IDS,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
        }
    ]
    every = logprobs_of("".join(pieces))  # the fake's pattern runs over the whole text
    at = 0
    for piece in pieces:
        logprobs = [{"token": c, "logprob": every[at + i], "top_logprobs": []} for i, c in enumerate(piece)]
        at += len(piece)
        choice = {
            "index": 0,
            "delta": {"content": piece},
            "logprobs": {"content": logprobs},
            "token_ids": token_ids_of(piece),
        }
        out.append({**base, "choices": [choice]})
    if finish:
        out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        text = "".join(pieces)
        out.append({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(text)}})
    return out


async def streamed(chat: FakeChatServer, **settings: Any) -> tuple[PolicyTurn, list[str]]:
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    async with OpenAIPolicy(make_settings(chat, **settings)) as policy:
        assert isinstance(policy, StreamingPolicy)
        with anyio.fail_after(10):
            turn = await policy.respond_streaming(make_request(), on_text)
    return turn, pieces


async def test_a_streamed_turn_is_recorded_as_the_plain_one(server: FakeChatServer) -> None:
    parts = [PLAN[i : i + 7] for i in range(0, len(PLAN), 7)]
    server.set(Events(events(parts)))
    turn, pieces = await streamed(server)
    (sent,) = server.requests
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert pieces == parts
    assert "".join(pieces) == turn.text == PLAN
    server.set(Completion(texts=[PLAN]))
    async with OpenAIPolicy(make_settings(server)) as policy:
        with anyio.fail_after(10):
            plain = await policy.respond(make_request())
    assert "stream" not in server.requests[0]
    assert turn.parsed == plain.parsed
    assert turn.completion_token_ids == plain.completion_token_ids == tuple(token_ids_of(PLAN))
    assert turn.logprobs == plain.logprobs
    assert turn.prompt_token_ids == tuple(PROMPT_IDS)
    assert turn.model == plain.model


async def test_native_calls_come_last_as_their_canonical_text(server: FakeChatServer) -> None:
    base: dict[str, Any] = {"model": "fake-model"}
    head = {"index": 0, "id": "t1", "type": "function", "function": {"name": "text_to_image", "arguments": '{"pro'}}
    tail = {"index": 0, "function": {"arguments": 'mpt": "a red fox"}'}}
    server.set(
        Events(
            [
                *events(["<think>go", "</think>"], finish=False, usage=False),
                {**base, "choices": [{"index": 0, "delta": {"tool_calls": [head]}}]},
                {**base, "choices": [{"index": 0, "delta": {"tool_calls": [tail]}, "finish_reason": "tool_calls"}]},
            ]
        )
    )
    turn, pieces = await streamed(server, tool_mode="native")
    call = write_tool_call(ToolCall(name="text_to_image", arguments={"prompt": "a red fox"}, id="t1"))
    assert pieces == ["<think>go", "</think>", "\n" + call]
    assert "".join(pieces) == turn.text
    assert turn.parsed.tool_calls[0].arguments == {"prompt": "a red fox"}


async def test_a_lone_surrogate_is_replaced_in_the_pieces_as_in_the_turn(server: FakeChatServer) -> None:
    server.set(Events(events(["<think>a", "\ud800", "b</think>"])))
    turn, pieces = await streamed(server)
    assert "".join(pieces) == turn.text == "<think>a\ufffdb</think>"
    assert [e.code for e in turn.parsed.errors] == ["bad_unicode"]


async def test_an_error_event_mid_stream_raises_after_the_pieces_sent(server: FakeChatServer) -> None:
    error = {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}
    server.set(Events([*events(["<think>", "half"], finish=False, usage=False), error]))
    with pytest.raises(PolicyHTTPError, match="engine died") as caught:
        await streamed(server)
    assert caught.value.status == 500
    assert len(server.requests) == 1


async def test_a_stream_cut_after_text_is_not_retried(server: FakeChatServer) -> None:
    server.set(Events(events(["<think>", "half"], finish=False, usage=False), cut=True))
    with pytest.raises(PolicyConnectionError, match="broke off"):
        await streamed(server)
    assert len(server.requests) == 1


async def test_a_stream_cut_before_any_text_is_retried(server: FakeChatServer) -> None:
    server.set(
        Events(events([], finish=False, usage=False), cut=True),
        Events(events([PLAN])),
    )
    turn, pieces = await streamed(server)
    assert len(server.requests) == 2
    assert pieces == [PLAN]
    assert turn.text == PLAN


async def test_a_stream_that_ends_without_a_finish_is_an_error(server: FakeChatServer) -> None:
    server.set(Events(events(["<think>", "half"], finish=False)))
    with pytest.raises(PolicyResponseError, match="ended before"):
        await streamed(server)


async def test_a_stream_over_the_byte_cap_stops_at_it(server: FakeChatServer) -> None:
    cap, size = 1024 * 1024, 100 * 1024 * 1024
    server.set(Stream(size=size))
    ended = threading.Event()
    server.on_stream_end = ended.set
    try:
        with pytest.raises(PolicyResponseTooLargeError) as caught:
            await streamed(server, max_response_bytes=cap)
        assert ended.wait(timeout=20), "the server kept streaming after the client hung up"
    finally:
        server.on_stream_end = None
    assert cap < caught.value.size <= cap + Stream(size=0).chunk  # stopped at the first chunk past the cap
    assert len(server.requests) == 1
    assert server.streamed_bytes < size // 4


async def test_a_streamed_turn_over_max_tokens_is_refused(server: FakeChatServer) -> None:
    server.set(Events(events(["x" * 40, "y" * 40])))
    with pytest.raises(PolicyResponseTooLargeError, match="max_tokens"):
        await streamed(server, max_tokens=50)


@pytest.mark.parametrize("native", [False, True])
async def test_the_same_completion_streamed_or_not_is_the_same_turn(server: FakeChatServer, native: bool) -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "text_to_image", "arguments": '{"prompt": "fox"}'}}
    server.set(Completion(texts=["<think>go</think>"], tool_calls=[call] if native else None))
    settings = make_settings(server, tool_mode="native" if native else "tags")
    async with OpenAIPolicy(settings) as policy:
        with anyio.fail_after(10):
            plain = await policy.respond(make_request("act"))
            pieces: list[str] = []

            async def on_text(piece: str) -> None:
                pieces.append(piece)

            turn = await policy.respond_streaming(make_request("act"), on_text)
    assert [r.get("stream", False) for r in server.requests] == [False, True]
    assert len(pieces) > 1
    assert "".join(pieces) == turn.text == plain.text
    assert turn.model_dump(exclude={"latency_s"}) == plain.model_dump(exclude={"latency_s"})
