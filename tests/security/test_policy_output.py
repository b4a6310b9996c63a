"""A policy server's answer is bounded: size, tokens, Unicode; the HTTP policy's faults carry a reason.

Against a real HTTP server on loopback (the fault-injecting fake of vLLM in tests/fakes).
"""

from __future__ import annotations

import json
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from tests.fakes.chat_server import Completion, FakeChatServer, Raw, Status, Stream
from tests.graph.conftest import make_client

from visioncreator.graph import PolicyChoiceError
from visioncreator.graph.policies import open_policy, served_model
from visioncreator.policy import (
    OpenAIPolicy,
    OpenAIPolicySettings,
    PolicyHTTPError,
    PolicyRequest,
    PolicyResponseError,
    PolicyResponseTooLargeError,
    Task,
    ToolSpec,
    system_message,
    task_message,
)

MiB = 1024 * 1024
CHUNK = 64 * 1024  # httpx/httpcore read at most this many bytes at a time
TOOLS = (
    ToolSpec(
        name="text_to_image",
        description="Make an image from a prompt.",
        input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]},
    ),
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        yield fake


@pytest.fixture
def chat(server: FakeChatServer) -> FakeChatServer:
    server.set(Completion())
    return server


def settings(chat: FakeChatServer, **overrides: Any) -> OpenAIPolicySettings:
    values: dict[str, Any] = {
        "base_url": chat.base_url,
        "model": "fake-model",
        "max_retries": 2,
        "backoff_s": 0.01,
        "timeout_s": 10.0,
        "connect_timeout_s": 2.0,
    }
    return OpenAIPolicySettings(**{**values, **overrides})


def request(node: Any = "act") -> PolicyRequest:
    messages = (system_message(TOOLS, {"max_turns": 8}), task_message(Task(request="a red fox")))
    return PolicyRequest(messages=messages, node=node, tools=TOOLS, seed=7)


# ---- body size ---------------------------------------------------------------------------------


async def test_a_100_mb_body_is_refused_after_reading_at_most_the_cap(chat: FakeChatServer) -> None:
    cap = 1 * MiB
    size = 100 * MiB
    chat.set(Stream(size=size))
    ended = threading.Event()
    chat.on_stream_end = ended.set
    tracemalloc.start()
    try:
        async with OpenAIPolicy(settings(chat, max_response_bytes=cap)) as policy:
            with anyio.fail_after(30), pytest.raises(PolicyResponseTooLargeError) as caught:
                await policy.respond(request())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    error = caught.value
    assert isinstance(error, PolicyResponseError)  # catchable as any bad answer
    assert error.unit == "bytes"
    assert error.limit == cap
    assert cap < error.size <= cap + CHUNK  # reading stopped at the first chunk past the cap
    assert "max_response_bytes" in str(error)
    assert peak < 8 * cap, f"peak traced memory {peak} bytes for a {cap}-byte cap"
    assert len(chat.requests) == 1  # not retried: the same request would get the same answer
    # The client hung up: the server got nowhere near the whole body out.
    assert ended.wait(timeout=20), "the server kept streaming after the client hung up"
    assert chat.streamed_bytes < size // 4


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(Raw(body=b"x" * (MiB + 1)), id="declared-length"),
        pytest.param(Stream(size=MiB + 1, declare_length=True), id="declared-streamed"),
        pytest.param(Stream(size=MiB + 1), id="chunked"),
    ],
)
async def test_a_body_one_byte_over_the_cap_is_a_typed_error(chat: FakeChatServer, behaviour: Raw | Stream) -> None:
    chat.set(behaviour)
    async with OpenAIPolicy(settings(chat, max_response_bytes=MiB)) as policy:
        with anyio.fail_after(20), pytest.raises(PolicyResponseTooLargeError) as caught:
            await policy.respond(request())
    assert caught.value.size > MiB
    if not isinstance(behaviour, Stream) or behaviour.declare_length:
        assert "announced a body of 1048577 bytes" in str(caught.value)


async def test_the_default_cap_fits_sixteen_1024_token_choices_with_logprobs(chat: FakeChatServer) -> None:
    text = "<think>" + "a" * (1024 - 15) + "</think>"
    chat.set(Completion(texts=[text]))
    async with OpenAIPolicy(settings(chat)) as policy:
        with anyio.fail_after(30):
            turns = await policy.sample(request(), 16)
    assert len(turns) == 16
    assert all(len(t.completion_token_ids or ()) == 1024 and len(t.logprobs or ()) == 1024 for t in turns)


async def test_an_error_body_is_read_only_up_to_its_cap(chat: FakeChatServer) -> None:
    chat.set(Raw(body=b"E" * (4 * MiB), status=400, content_type="text/plain"))
    async with OpenAIPolicy(settings(chat, max_error_body_bytes=1024)) as policy:
        with anyio.fail_after(20), pytest.raises(PolicyHTTPError) as caught:
            await policy.respond(request())
    assert caught.value.status == 400
    assert len(caught.value.server_message) <= 1024


async def test_a_compressed_body_that_was_not_asked_for_is_refused(chat: FakeChatServer) -> None:
    import gzip

    chat.set(Raw(body=gzip.compress(b"{}" + b" " * MiB)))
    chat.headers = {"content-encoding": "gzip"}
    try:
        async with OpenAIPolicy(settings(chat)) as policy:
            with anyio.fail_after(20), pytest.raises(PolicyResponseError, match="compressed with 'gzip'"):
                await policy.respond(request())
    finally:
        chat.headers = {}
    assert chat.accept_encodings == ["identity"]


# ---- tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "completion", "extra"),
    [
        ("token_ids", Completion(texts=["a" * 101], usage=False), {}),
        ("logprobs", Completion(texts=["a" * 101], token_ids=False, usage=False), {}),
        ("usage.completion_tokens", Completion(texts=["a" * 101], token_ids=False, logprobs=False), {}),
        (
            "text",
            Completion(texts=["a" * 201], token_ids=False, logprobs=False, usage=False),
            {"max_chars_per_token": 2},
        ),
    ],
)
async def test_a_completion_over_max_tokens_is_a_typed_error(
    chat: FakeChatServer, what: str, completion: Completion, extra: dict[str, Any]
) -> None:
    chat.set(completion)
    async with OpenAIPolicy(settings(chat, max_tokens=100, **extra)) as policy:
        with anyio.fail_after(20), pytest.raises(PolicyResponseTooLargeError, match="ignored max_tokens") as caught:
            await policy.respond(request())
    assert what in str(caught.value)
    assert caught.value.unit == ("characters" if what == "text" else "tokens")
    assert len(chat.requests) == 1


async def test_a_completion_of_exactly_max_tokens_is_a_turn(chat: FakeChatServer) -> None:
    chat.set(Completion(texts=["a" * 100]))
    async with OpenAIPolicy(settings(chat, max_tokens=100)) as policy:
        with anyio.fail_after(20):
            turn = await policy.respond(request())
    assert len(turn.completion_token_ids or ()) == 100


async def test_extra_body_max_tokens_is_the_limit_checked(chat: FakeChatServer) -> None:
    chat.set(Completion(texts=["a" * 150]))
    async with OpenAIPolicy(settings(chat, max_tokens=100, extra_body={"max_tokens": 200})) as policy:
        with anyio.fail_after(20):
            turn = await policy.respond(request())
    assert chat.requests[0]["max_tokens"] == 200
    assert len(turn.text) == 150


# ---- Unicode -----------------------------------------------------------------------------------


def _tool_call(arguments: str) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "text_to_image", "arguments": arguments}}


@pytest.mark.parametrize(
    "completion",
    [
        pytest.param(Completion(texts=["<think>a \ud800 fox</think>"]), id="text"),
        pytest.param(
            Completion(texts=['<reflect>{"verdict": "accept", "faults": ["\\ud800"]}</reflect>']), id="escaped"
        ),
        pytest.param(
            Completion(texts=['<reflect>{"verdict": "accept", "faults": ["\ud800"]}</reflect>']), id="literal-in-json"
        ),
        pytest.param(Completion(texts=[""], tool_calls=[_tool_call('{"prompt": "a \\udc00 fox"}')]), id="native-args"),
        pytest.param(Completion(texts=[""], tool_calls=[_tool_call('{"prompt": "a \udc00 fox"}')]), id="native-raw"),
        pytest.param(
            Completion(texts=['<tool_call>{"name": "text_to_image", "arguments": {"prompt": "\\ud83d"}}</tool_call>']),
            id="tagged-args",
        ),
    ],
)
async def test_a_lone_surrogate_is_a_format_error_and_the_turn_serializes(
    chat: FakeChatServer, completion: Completion
) -> None:
    chat.set(completion)
    async with OpenAIPolicy(settings(chat, tool_mode="native")) as policy:
        with anyio.fail_after(20):
            turn = await policy.respond(request())
    assert "bad_unicode" in [e.code for e in turn.parsed.errors]
    assert turn.parsed.tool_calls == ()  # a call holding invalid Unicode is never run
    assert turn.parsed.reflections == ()
    turn.text.encode("utf-8")  # storable
    json.loads(turn.model_dump_json())  # and serializable, with every parsed value


# ---- choosing and opening the policy -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_served_model_names_the_reason_of_a_refused_connection() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with anyio.fail_after(20), pytest.raises(PolicyChoiceError) as caught:
        await served_model(url, timeout_s=5)
    message = str(caught.value)
    assert "ConnectError" in message
    assert ": ;" not in message
    assert not message.endswith(": ")


async def test_served_model_names_the_reason_of_a_silent_server() -> None:
    # A server that accepts and never answers: httpx's ReadTimeout has an empty text.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        with anyio.fail_after(20), pytest.raises(PolicyChoiceError) as caught:
            await served_model(url, timeout_s=0.3)
    message = str(caught.value)
    assert "ReadTimeout" in message
    assert "ReadTimeout: ;" not in message


async def test_open_policy_passes_timeout_and_retries(chat: FakeChatServer, tmp_path: Path) -> None:
    chat.set(Status(503, "loading"))
    async with make_client(tmp_path / "store") as tools:
        async with open_policy(chat.base_url, tools=tools, model="m", timeout_s=3.5, max_retries=0) as policy:
            assert isinstance(policy, OpenAIPolicy)
            assert policy.settings.timeout_s == 3.5
            assert policy.settings.max_retries == 0
            with anyio.fail_after(20), pytest.raises(PolicyHTTPError, match="loading"):
                await policy.respond(request())
        assert len(chat.requests) == 1  # max_retries=0: no retry of the 503
        async with open_policy(chat.base_url, tools=tools, model="m") as policy:
            assert isinstance(policy, OpenAIPolicy)
            defaults = OpenAIPolicySettings(base_url=chat.base_url, model="m")
            assert (policy.settings.timeout_s, policy.settings.max_retries) == (
                defaults.timeout_s,
                defaults.max_retries,
            )
