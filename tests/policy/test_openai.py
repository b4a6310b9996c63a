"""The ``openai`` policy against a real HTTP server on loopback (a fault-injecting fake of vLLM)."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from PIL import Image
from tests.fakes.chat_server import (
    Completion,
    FakeChatServer,
    Raw,
    Status,
    logprobs_of,
    prompt_ids_of,
    token_ids_of,
)

from visioncreator.policy import (
    Message,
    Observation,
    OpenAIPolicy,
    OpenAIPolicySettings,
    PlanStep,
    PolicyConnectionError,
    PolicyContextLengthError,
    PolicyHTTPError,
    PolicyRequest,
    PolicyResponseError,
    PolicyTimeoutError,
    PolicyTransportError,
    Task,
    ToolCall,
    ToolSpec,
    node_instruction,
    observation_message,
    parse_turn,
    system_message,
    task_message,
    write_plan,
    write_think,
    write_tool_call,
    write_turn,
)
from visioncreator.policy.openai.messages import TOOL_RESULTS_PREFIX, to_chat_messages

TOOLS = (
    ToolSpec(
        name="text_to_image",
        description="Make an image from a prompt.",
        input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]},
    ),
)
PLAN = write_turn(write_think("one fox"), write_plan([PlanStep(step=1, goal="a red fox", tool="text_to_image")]))
HANDLE = "img_" + "ab" * 12


@pytest.fixture(scope="module")
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        yield fake


@pytest.fixture
def chat(server: FakeChatServer) -> FakeChatServer:
    server.set(Completion())
    return server


def make_settings(chat: FakeChatServer, **overrides: Any) -> OpenAIPolicySettings:
    values: dict[str, Any] = {
        "base_url": chat.base_url,
        "model": "fake-model",
        "max_retries": 2,
        "backoff_s": 0.01,
        "timeout_s": 5.0,
        "connect_timeout_s": 2.0,
    }
    values.update(overrides)
    return OpenAIPolicySettings(**values)


def make_request(node: Any = "plan", extra: tuple[Message, ...] = ()) -> PolicyRequest:
    messages = (system_message(TOOLS, {"max_turns": 8}), task_message(Task(request="a red fox")), *extra)
    return PolicyRequest(messages=messages, node=node, tools=TOOLS, seed=7)


async def test_respond_returns_text_parsed_token_ids_and_logprobs(chat: FakeChatServer) -> None:
    chat.set(Completion(texts=[PLAN]))
    async with OpenAIPolicy(make_settings(chat)) as policy:
        with anyio.fail_after(10):
            turn = await policy.respond(make_request())
    assert policy.name == "openai:fake-model"
    assert turn.text == PLAN
    assert turn.parsed.ok
    assert turn.parsed.plan is not None
    assert turn.model == "fake-model"
    assert turn.completion_token_ids == tuple(token_ids_of(PLAN))
    assert turn.logprobs == tuple(logprobs_of(PLAN))
    (sent,) = chat.requests
    assert turn.prompt_token_ids == tuple(prompt_ids_of(sent))
    assert turn.latency_s > 0
    assert sent["n"] == 1
    assert sent["logprobs"] is True
    assert sent["return_token_ids"] is True
    assert "tools" not in sent
    assert sent["model"] == "fake-model"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][-1]["content"].endswith(node_instruction("plan"))


async def test_seed_is_per_turn_and_reproducible(chat: FakeChatServer) -> None:
    async with OpenAIPolicy(make_settings(chat, seed=1)) as policy:
        with anyio.fail_after(10):
            await policy.respond(make_request())
            await policy.respond(make_request())
            await policy.respond(make_request("act", (Message(role="assistant", content=PLAN, node="plan"),)))
    seeds = [r["seed"] for r in chat.requests]
    assert seeds[0] == seeds[1] != seeds[2]


async def test_tags_mode_sends_observations_as_user_text(chat: FakeChatServer) -> None:
    call = ToolCall(name="text_to_image", arguments={"prompt": "a red fox"}, step=1)
    obs = Observation(call_id="call_1_0", name="text_to_image", ok=True, result={"handle": HANDLE})
    extra = (Message(role="assistant", content=write_tool_call(call), node="act"), observation_message([obs]))
    async with OpenAIPolicy(make_settings(chat)) as policy:
        with anyio.fail_after(10):
            await policy.respond(make_request("reflect", extra))
    messages = chat.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[3]["content"].startswith(TOOL_RESULTS_PREFIX)
    assert HANDLE in messages[3]["content"]
    assert messages[3]["content"].endswith(node_instruction("reflect"))


async def test_native_tool_calls_become_canonical_segments(chat: FakeChatServer) -> None:
    native = {
        "id": "chatcmpl-tool-1",
        "type": "function",
        "function": {"name": "text_to_image", "arguments": json.dumps({"prompt": "a red fox", "step": 1})},
    }
    chat.set(Completion(texts=["<think>go</think>"], tool_calls=[native]))
    async with OpenAIPolicy(make_settings(chat, tool_mode="native", tool_choice="required")) as policy:
        with anyio.fail_after(10):
            turn = await policy.respond(make_request("act"))
    expected = ToolCall(name="text_to_image", arguments={"prompt": "a red fox"}, step=1, id="chatcmpl-tool-1")
    assert turn.parsed.ok, turn.parsed.errors
    assert turn.parsed.tool_calls == (expected,)
    assert parse_turn(turn.text).tool_calls == parse_turn(write_tool_call(expected)).tool_calls
    assert turn.text.startswith("<think>go</think>")
    assert turn.completion_token_ids is not None
    assert turn.logprobs is not None
    sent = chat.requests[0]
    assert sent["tool_choice"] == "required"
    (tool,) = sent["tools"]
    assert tool["function"]["name"] == "text_to_image"
    assert tool["function"]["parameters"]["properties"]["step"]["type"] == "integer"


async def test_native_tools_are_not_offered_on_the_plan_node(chat: FakeChatServer) -> None:
    async with OpenAIPolicy(make_settings(chat, tool_mode="native")) as policy:
        with anyio.fail_after(10):
            await policy.respond(make_request("plan"))
    assert "tools" not in chat.requests[0]


async def test_a_bad_native_call_is_a_format_error_not_a_crash(chat: FakeChatServer) -> None:
    native = {"id": "t1", "type": "function", "function": {"name": "text_to_image", "arguments": "{not json"}}
    chat.set(Completion(texts=[""], tool_calls=[native]))
    async with OpenAIPolicy(make_settings(chat, tool_mode="native")) as policy:
        with anyio.fail_after(10):
            turn = await policy.respond(make_request("act"))
    assert turn.parsed.tool_calls == ()
    assert [e.code for e in turn.parsed.errors] == ["bad_json"]


async def test_native_history_pairs_calls_with_tool_messages() -> None:
    """The graph's ids (call_{turn}_{k}) differ from the ones the text lacks: pairing falls back to order."""
    calls = [ToolCall(name="text_to_image", arguments={"prompt": p}, step=i + 1) for i, p in enumerate("ab")]
    assistant = Message(role="assistant", content=write_turn(*(write_tool_call(c) for c in calls)), node="act")
    error = Message(role="user", content="<error>{}</error>")
    obs = [
        Observation(call_id=f"call_1_{k}", name="text_to_image", ok=True, result={"handle": HANDLE}) for k in range(2)
    ]
    tool = observation_message(obs)
    settings = OpenAIPolicySettings(base_url="http://127.0.0.1:1/v1", model="m", tool_mode="native")
    out = await to_chat_messages([assistant, error, tool], "reflect", settings, {HANDLE: "data:image/png;base64,AA=="})
    # The act turn keeps the instruction it was asked with, so later prompts extend earlier ones.
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "tool", "user"]
    assert out[0]["content"] == node_instruction("act")
    ids = [c["id"] for c in out[1]["tool_calls"]]
    assert len(set(ids)) == 2
    assert [m["tool_call_id"] for m in out[2:4]] == ids
    assert json.loads(out[1]["tool_calls"][1]["function"]["arguments"]) == {"prompt": "b", "step": 2}
    assert json.loads(out[2]["content"])["call_id"] == "call_1_0"
    # The error message and the images follow the tool results, merged into one user message.
    parts = out[4]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url", "text", "text"]
    assert parts[-1]["text"] == node_instruction("reflect")


async def test_sample_returns_n_turns_from_one_request(chat: FakeChatServer) -> None:
    texts = [f"<think>sample {i}</think>" for i in range(3)]
    chat.set(Completion(texts=texts))
    async with OpenAIPolicy(make_settings(chat)) as policy:
        with anyio.fail_after(10):
            turns = await policy.sample(make_request(), 3)
    assert [t.text for t in turns] == texts
    assert [t.completion_token_ids for t in turns] == [tuple(token_ids_of(t)) for t in texts]
    assert len(chat.requests) == 1
    assert chat.requests[0]["n"] == 3


async def test_a_5xx_is_retried_and_then_succeeds(chat: FakeChatServer) -> None:
    chat.set(Status(500, "engine hiccup"), Completion(texts=[PLAN]))
    async with OpenAIPolicy(make_settings(chat)) as policy:
        with anyio.fail_after(10):
            turn = await policy.respond(make_request())
    assert turn.text == PLAN
    assert len(chat.requests) == 2


async def test_always_5xx_gives_up_after_the_retries(chat: FakeChatServer) -> None:
    chat.set(Status(503, "engine overloaded"))
    async with OpenAIPolicy(make_settings(chat, max_retries=2)) as policy:
        with anyio.fail_after(10), pytest.raises(PolicyHTTPError) as caught:
            await policy.respond(make_request())
    assert caught.value.status == 503
    assert caught.value.attempts == 3
    assert "engine overloaded" in str(caught.value)
    assert len(chat.requests) == 3


async def test_a_slow_server_times_out_without_retry(chat: FakeChatServer) -> None:
    chat.set(Completion(delay_s=1.0))
    started = time.perf_counter()
    async with OpenAIPolicy(make_settings(chat, timeout_s=0.3)) as policy:
        with anyio.fail_after(10), pytest.raises(PolicyTimeoutError, match=r"timeout_s=0\.3"):
            await policy.respond(make_request())
    assert time.perf_counter() - started < 0.9
    assert len(chat.requests) == 1
    # A transport error of ours, not a builtin TimeoutError: whether a run retries it is the graph's
    # explicit choice (AgentConfig.policy_retry), not an accident of its base class.
    assert isinstance(PolicyTimeoutError("x"), PolicyTransportError)
    assert not isinstance(PolicyTimeoutError("x"), TimeoutError)


@pytest.mark.parametrize(
    "body",
    [
        b"not json{",
        b"[1, 2]",
        b'{"choices": "nope"}',
        b'{"choices": [{"index": 0}]}',
        b'{"choices": [{"index": 0, "message": {"content": "x"}, "token_ids": ["a"]}]}',
        b'{"choices": [{"index": 0, "message": {"content": "x"}, "logprobs": {"content": [{"token": "x"}]}}]}',
    ],
)
async def test_a_garbage_body_is_a_response_error(chat: FakeChatServer, body: bytes) -> None:
    chat.set(Raw(body))
    async with OpenAIPolicy(make_settings(chat)) as policy:
        with anyio.fail_after(10), pytest.raises(PolicyResponseError):
            await policy.respond(make_request())
    assert len(chat.requests) == 1


OVERFLOW = "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens."


async def test_an_overlong_prompt_becomes_an_empty_turn_by_default(chat: FakeChatServer) -> None:
    chat.set(Status(400, OVERFLOW))
    async with OpenAIPolicy(make_settings(chat)) as policy:
        with anyio.fail_after(10):
            turn = await policy.respond(make_request())
    assert turn.text == ""
    (error,) = turn.parsed.errors
    assert error.code == "empty"
    assert "maximum context length is 2048" in error.message
    assert turn.completion_token_ids is None
    assert len(chat.requests) == 1


async def test_an_overlong_prompt_raises_when_asked(chat: FakeChatServer) -> None:
    chat.set(Status(400, OVERFLOW))
    async with OpenAIPolicy(make_settings(chat, on_context_overflow="raise")) as policy:
        with anyio.fail_after(10), pytest.raises(PolicyContextLengthError):
            await policy.respond(make_request())


async def test_another_4xx_raises_at_once_with_the_server_message(chat: FakeChatServer) -> None:
    chat.set(Status(404, "The model `nope` does not exist."))
    async with OpenAIPolicy(make_settings(chat)) as policy:
        with anyio.fail_after(10), pytest.raises(PolicyHTTPError, match="does not exist") as caught:
            await policy.respond(make_request())
    assert caught.value.status == 404
    assert not isinstance(caught.value, PolicyContextLengthError)
    assert len(chat.requests) == 1


async def test_a_server_that_is_down_is_a_connection_error_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        settings = OpenAIPolicySettings(
            base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, backoff_s=0.01, connect_timeout_s=1
        )
        started = time.perf_counter()
        async with OpenAIPolicy(settings) as policy:
            with anyio.fail_after(10), pytest.raises(PolicyConnectionError, match="after 3 attempts"):
                await policy.respond(make_request())
    assert time.perf_counter() - started < 5
    assert isinstance(PolicyConnectionError("x"), PolicyTransportError)
    assert not isinstance(PolicyConnectionError("x"), ConnectionError)


class DictImages:
    """An ImageSource over a dict (the graph wires ToolClient.read_image the same way)."""

    def __init__(self, images: dict[str, bytes]) -> None:
        self.images = images
        self.reads: list[str] = []

    async def read(self, handle: str) -> bytes:
        self.reads.append(handle)
        return self.images[handle]


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_images_go_as_resized_data_uris_and_are_cached(chat: FakeChatServer, fmt: str) -> None:
    images = DictImages({HANDLE: png(1000, 500)})
    extra = (Message(role="user", content="look", images=(HANDLE,)),)
    settings = make_settings(chat, image_max_side=200, image_format=fmt)
    async with OpenAIPolicy(settings, images=images) as policy:
        with anyio.fail_after(10):
            await policy.respond(make_request("plan", extra))
            await policy.respond(make_request("plan", extra))
    assert images.reads == [HANDLE]
    parts = chat.requests[0]["messages"][-1]["content"]
    (uri,) = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    assert uri.startswith(f"data:{mime};base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:  # noqa: TID251 - our own output
        assert img.size == (200, 100)
        assert img.format == fmt


async def test_no_image_source_sends_text_only(chat: FakeChatServer) -> None:
    extra = (Message(role="user", content="look", images=(HANDLE,)),)
    async with OpenAIPolicy(make_settings(chat)) as policy:
        with anyio.fail_after(10):
            await policy.respond(make_request("plan", extra))
    assert isinstance(chat.requests[0]["messages"][-1]["content"], str)


async def test_extra_body_and_sampling_settings_are_sent(chat: FakeChatServer) -> None:
    settings = make_settings(
        chat,
        temperature=0.2,
        top_p=0.9,
        max_tokens=77,
        stop=("</answer>",),
        top_logprobs=2,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}, "top_k": 5},
        api_key="secret-key",
        append_node_instruction=False,
    )
    assert "secret-key" not in repr(settings)
    async with OpenAIPolicy(settings) as policy:
        with anyio.fail_after(10):
            await policy.respond(make_request())
    sent = chat.requests[0]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["stop"]) == (0.2, 0.9, 77, ["</answer>"])
    assert sent["top_logprobs"] == 2
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["top_k"] == 5
    assert node_instruction("plan") not in sent["messages"][-1]["content"]


def test_the_guard_refuses_non_loopback_connections() -> None:
    with socket.socket() as sock, pytest.raises(PermissionError, match="loopback"):
        sock.connect(("192.0.2.1", 80))
    with pytest.raises(PermissionError, match="loopback"):
        socket.getaddrinfo("example.com", 443)
