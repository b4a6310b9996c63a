"""A hostile policy turn through the real graph: bounded per turn in checkpoints, never a crash.

The real graph (build_agent), the real synthetic tool server in-process, a real SQLite
checkpointer; the policy is scripted, or the HTTP policy against the fake vLLM on loopback.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from tests.fakes.chat_server import Completion, FakeChatServer, Stream
from tests.graph.conftest import make_client, run

from visioncreator.graph import AgentConfig
from visioncreator.graph.runner import RunResult
from visioncreator.policy import (
    FormatError,
    OpenAIPolicy,
    OpenAIPolicySettings,
    ParsedTurn,
    Policy,
    PolicyRequest,
    PolicyResponseTooLargeError,
    PolicyTurn,
    ScriptedPolicy,
    Segment,
    Task,
    ToolCall,
    write_tool_call,
)

PLAN = '<plan>[{"step": 1, "goal": "a cat", "tool": "text_to_image", "depends_on": []}]</plan>'
CALL = '<tool_call>{"name": "text_to_image", "arguments": {"prompt": "a cat", "seed": 1}, "step": 1}</tool_call>'
ACCEPT = '<reflect>{"verdict": "accept", "faults": []}</reflect>'
_HANDLE_RE = re.compile(r"img_[0-9a-f]{24}")
CAP = 20_000


def answer(seen: str) -> str:
    """The answer naming the latest image handle in what the policy saw."""
    return f'<answer>{{"images": ["{_HANDLE_RE.findall(seen)[-1]}"]}}</answer>'


def scripted(*turns: str) -> ScriptedPolicy:
    return ScriptedPolicy([*turns, lambda r: answer(json.dumps([m.content for m in r.messages]))])


@pytest.fixture(scope="module")
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        yield fake


def http_policy(chat: FakeChatServer, *turns: str, **overrides: Any) -> OpenAIPolicy:
    chat.set(
        *(Completion(texts=[t]) for t in turns), Completion(texts=lambda body: answer(json.dumps(body["messages"])))
    )
    values: dict[str, Any] = {"base_url": chat.base_url, "model": "fake", "max_retries": 0, "max_tokens": 200_000}
    return OpenAIPolicy(OpenAIPolicySettings(**{**values, **overrides}))


def checkpoint_bytes(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (saved,) = conn.execute("SELECT coalesce(sum(length(checkpoint)), 0) FROM checkpoints").fetchone()
        (writes,) = conn.execute("SELECT coalesce(sum(length(value)), 0) FROM writes").fetchone()
    return int(saved) + int(writes)


async def run_saved(tmp_path: Path, name: str, policy: Policy, config: AgentConfig) -> tuple[RunResult, int]:
    db = tmp_path / f"{name}.sqlite"
    try:
        async with make_client(tmp_path / name) as tools, AsyncSqliteSaver.from_conn_string(str(db)) as saver:
            with anyio.fail_after(60):
                result = await run(tools, Task(request="a cat"), policy=policy, config=config, checkpointer=saver)
    finally:
        if isinstance(policy, OpenAIPolicy):
            await policy.aclose()
    return result, checkpoint_bytes(db)


def errors_seen_after(requests: Sequence[PolicyRequest] | Sequence[dict[str, Any]], turn: int) -> list[dict[str, Any]]:
    """The errors of the error observation the policy read on the turn after ``turn``."""
    nxt = requests[turn + 1]
    contents = [m.content for m in nxt.messages] if isinstance(nxt, PolicyRequest) else _texts(nxt)
    for content in reversed(contents):
        if isinstance(content, str) and "<error>" in content:
            start = content.index("<error>") + len("<error>")
            return list(json.loads(content[start : content.index("</error>", start)])["errors"])
    raise AssertionError(f"turn {turn + 1} saw no error observation")


def _texts(body: dict[str, Any]) -> list[str]:
    out = []
    for m in body["messages"]:
        content = m.get("content")
        out.extend([content] if isinstance(content, str) else [p.get("text", "") for p in content or []])
    return out


# ---- size --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["scripted", "http"])
async def test_an_oversize_turn_is_cut_and_checkpoints_grow_by_a_bounded_amount(
    tmp_path: Path, server: FakeChatServer, backend: str
) -> None:
    # The HTTP turn stays under the back end's own body cap (8 MiB: ~60 bytes a token with ids and log-probabilities).
    big = "<think>" + "x" * (1_000_000 if backend == "scripted" else 100_000) + "</think>" + CALL
    small = "<think>short</think>"
    config = AgentConfig(max_turn_chars=CAP)
    sizes, results, requests = {}, {}, {}
    for name, second in (("small", small), ("big", big)):
        turns = (PLAN, second, CALL, ACCEPT)
        policy: Policy = scripted(*turns) if backend == "scripted" else http_policy(server, *turns)
        results[name], sizes[name] = await run_saved(tmp_path, name, policy, config)
        requests[name] = list(policy.requests) if isinstance(policy, ScriptedPolicy) else list(server.requests)
    state = results["big"].state
    assert state["termination"] == "answered"  # the run went on after the oversize turn
    record = state["turns"][1]
    assert len(record.text) < CAP + 100
    assert record.text.startswith(big[:CAP])
    assert "[cut: " in record.text
    assert [e.code for e in record.errors] == ["too_long"]
    assert record.segments == ()  # the call inside the cut turn was not run
    assert record.completion_token_ids is None
    assert record.logprobs is None
    assert [c.turn for c in state["tool_calls"] if c.by == "policy"] == [2]
    assert [e["code"] for e in errors_seen_after(requests["big"], 1)] == ["too_long"]
    # Every checkpoint after the turn holds the cut text, not the megabyte.
    assert sizes["big"] - sizes["small"] < 30 * CAP, sizes
    # The record and the next request serialize and stay small.
    assert len(results["big"].trajectory.model_dump_json()) < 10 * CAP
    assert max(len(json.dumps(r, default=str)) for r in requests["big"][2:]) < 10 * CAP


async def test_an_oversize_http_body_fails_the_run_once_and_the_finished_turns_are_kept(
    tmp_path: Path, server: FakeChatServer
) -> None:
    server.set(Completion(texts=[PLAN]), Stream(size=100 * 1024 * 1024))
    policy = OpenAIPolicy(OpenAIPolicySettings(base_url=server.base_url, model="fake", max_response_bytes=1024 * 1024))
    with pytest.raises(PolicyResponseTooLargeError):
        await run_saved(tmp_path, "huge", policy, AgentConfig())
    assert len(server.requests) == 2  # plan, then act once: neither the back end nor the graph retries it
    with sqlite3.connect(tmp_path / "huge.sqlite") as conn:
        (saved,) = conn.execute("SELECT count(*) FROM checkpoints").fetchone()
    assert saved > 0  # the plan turn is kept: the run resumes from it
    assert checkpoint_bytes(tmp_path / "huge.sqlite") < 1024 * 1024


class _Handmade:
    """A back end that builds its turns itself (no parser): a hostile or buggy one."""

    name = "handmade"

    def __init__(self, first: PolicyTurn) -> None:
        self.first = first
        self.inner = scripted(PLAN, CALL, ACCEPT)
        self.requests: list[PolicyRequest] = []

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        self.requests.append(request)
        if len(self.requests) == 2:
            return self.first
        return await self.inner.respond(request)


async def test_too_many_token_ids_are_dropped_with_a_too_long_error(tmp_path: Path) -> None:
    turn = PolicyTurn(text="<think>ok</think>", parsed=ParsedTurn(), completion_token_ids=(1,) * (CAP + 1))
    policy = _Handmade(turn)
    result, _ = await run_saved(tmp_path, "ids", policy, AgentConfig(max_turn_chars=CAP))
    record = result.state["turns"][1]
    assert record.completion_token_ids is None
    assert [e.code for e in record.errors] == ["too_long"]
    assert f"{CAP + 1} tokens" in record.errors[0].message
    assert result.state["termination"] == "answered"


async def test_errors_per_turn_are_capped(tmp_path: Path) -> None:
    junk = "<a>" * 5_000
    policy = scripted(PLAN, junk, CALL, ACCEPT)
    result, _ = await run_saved(tmp_path, "junk", policy, AgentConfig(max_turn_errors=20))
    record = result.state["turns"][1]
    assert len(record.errors) == 20
    assert "4981 more format errors" in record.errors[-1].message
    seen = errors_seen_after(policy.requests, 1)
    assert len(seen) <= 20
    assert result.state["termination"] == "answered"


# ---- Unicode -----------------------------------------------------------------------------------


def _surrogate_turns() -> dict[str, Callable[[FakeChatServer], Policy]]:
    bad_text = "<think>a \ud800 b</think>" + CALL
    bad_args = CALL.replace("a cat", "a \\udc00 cat")
    native_call = {
        "id": "call_x",
        "type": "function",
        "function": {"name": "text_to_image", "arguments": json.dumps({"prompt": "a \udc00 cat", "step": 1})},
    }

    def native(chat: FakeChatServer) -> Policy:
        chat.set(
            Completion(texts=[PLAN]),
            Completion(texts=[""], tool_calls=[native_call]),
            Completion(texts=[CALL]),
            Completion(texts=[ACCEPT]),
            Completion(texts=lambda body: answer(json.dumps(body["messages"]))),
        )
        return OpenAIPolicy(
            OpenAIPolicySettings(base_url=chat.base_url, model="fake", max_retries=0, tool_mode="native")
        )

    good = ToolCall(name="text_to_image", arguments={"prompt": "a \ud800 cat"}, step=1)
    handmade = PolicyTurn(
        text=write_tool_call(good).replace("\ud800", "?"),
        parsed=ParsedTurn(segments=(Segment(kind="tool_call", start=0, end=10, body="", value=good),)),
    )
    return {
        "scripted-text": lambda chat: scripted(PLAN, bad_text, CALL, ACCEPT),
        "http-text": lambda chat: http_policy(chat, PLAN, bad_text, CALL, ACCEPT),
        "http-escaped-args": lambda chat: http_policy(chat, PLAN, bad_args, CALL, ACCEPT),
        "http-native-args": native,
        "handmade-value": lambda chat: _Handmade(handmade),
    }


@pytest.mark.parametrize("case", list(_surrogate_turns()))
async def test_a_lone_surrogate_is_a_format_error_and_everything_serializes(
    tmp_path: Path, server: FakeChatServer, case: str
) -> None:
    policy = _surrogate_turns()[case](server)
    result, _ = await run_saved(tmp_path, "u", policy, AgentConfig())
    state = result.state
    assert state["termination"] == "answered"  # the run went on and finished
    record = state["turns"][1]
    assert "bad_unicode" in [e.code for e in record.errors]
    if case.endswith("-text"):  # replaced by U+FFFD where it was (a checkpointer would make it '?')
        assert "a \ufffd b" in record.text
    # A call holding it is never run; a good call beside a bad <think> is.
    assert len(record.parsed.tool_calls) == (1 if case.endswith("-text") else 0)
    assert "\ufffd" not in json.dumps([c.arguments for c in record.parsed.tool_calls], ensure_ascii=False)
    requests = server.requests if isinstance(policy, OpenAIPolicy) else getattr(policy, "requests", [])
    assert "bad_unicode" in [e["code"] for e in errors_seen_after(requests, 1)]
    # trajectory.json writes and reads back (the next request went out: the run finished).
    path = tmp_path / "trajectory.json"
    path.write_text(result.trajectory.model_dump_json(indent=1), encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8"))["turns"][1]["errors"]


def test_the_format_error_codes_include_the_new_ones() -> None:
    assert FormatError(code="too_long", message="x").code == "too_long"
    assert FormatError(code="bad_unicode", message="x").code == "bad_unicode"
