"""The ``openai`` policy driving the real graph and tool server, with a fake model server on loopback."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from tests.fakes.chat_server import Completion, FakeChatServer, Status, logprobs_of, token_ids_of
from tests.graph.conftest import make_client, run

from visioncreator.graph import AgentConfig, ToolClient
from visioncreator.policy import (
    NODE_INSTRUCTIONS,
    Answer,
    OpenAIPolicy,
    OpenAIPolicySettings,
    PlanStep,
    PolicyHTTPError,
    Reflection,
    Task,
    ToolCall,
    write_answer,
    write_plan,
    write_reflect,
    write_think,
    write_tool_call,
    write_turn,
)

TASK = Task(request="a red fox next to a blue car")
_HANDLE_RE = re.compile(r"img_[0-9a-f]{24}")


class ToolClientImages:
    """The ImageSource adapter the CLI wires: image bytes through the MCP ``image://`` resource."""

    def __init__(self, tools: ToolClient) -> None:
        self.tools = tools

    async def read(self, handle: str) -> bytes:
        return await self.tools.read_image(handle)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")


def agent_turn(body: dict[str, Any]) -> str:
    """A model that plans, calls one tool, accepts the image, and answers, reading its node's instruction."""
    instruction = _text(body["messages"][-1]["content"])
    handles = _HANDLE_RE.findall(json.dumps(body["messages"]))
    if instruction.endswith(NODE_INSTRUCTIONS["plan"]):
        step = PlanStep(step=1, goal=TASK.request, tool="text_to_image", prompt=TASK.request)
        return write_turn(write_think("one image"), write_plan([step]))
    if instruction.endswith(NODE_INSTRUCTIONS["reflect"]):
        return write_reflect(Reflection(verdict="accept", image=handles[-1]))
    if handles:
        return write_answer(Answer(images=(handles[-1],)))
    return write_tool_call(ToolCall(name="text_to_image", arguments={"prompt": TASK.request, "seed": 1}, step=1))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        yield fake


def make_policy(chat: FakeChatServer, tools: ToolClient) -> OpenAIPolicy:
    settings = OpenAIPolicySettings(
        base_url=chat.base_url, model="fake-model", max_retries=1, backoff_s=0.01, timeout_s=10, seed=3
    )
    return OpenAIPolicy(settings, images=ToolClientImages(tools))


async def test_a_run_completes_and_records_token_ids_and_logprobs(server: FakeChatServer, tmp_path: Path) -> None:
    server.set(Completion(texts=agent_turn))
    async with make_client(tmp_path / "store") as tools, make_policy(server, tools) as policy:
        with anyio.fail_after(60):
            result = await run(tools, TASK, policy=policy, config=AgentConfig(observe="both"))
    state = result.state
    assert state["termination"] == "answered"
    assert [t.node for t in state["turns"]] == ["plan", "act", "reflect", "act"]
    for turn, body in zip(state["turns"], server.requests, strict=True):
        assert turn.errors == ()
        assert list(turn.completion_token_ids or ()) == token_ids_of(turn.text)
        assert list(turn.logprobs or ()) == logprobs_of(turn.text)
        assert turn.prompt_token_ids == (len(body["messages"]), len(json.dumps(body["messages"])))
        assert turn.model == "fake-model"
    # The reflect turn saw the new image itself, as a data URI fetched over MCP.
    reflect_parts = server.requests[2]["messages"][-1]["content"]
    assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/jpeg") for p in reflect_parts)


async def test_a_server_error_mid_run_fails_it_and_resume_keeps_the_finished_turns(
    server: FakeChatServer, tmp_path: Path
) -> None:
    # plan and act answer; from the reflect turn on the server fails (500 on every retry).
    server.set(Completion(texts=agent_turn), Completion(texts=agent_turn), Status(500, "engine died"))
    saver = InMemorySaver()
    async with make_client(tmp_path / "store") as tools, make_policy(server, tools) as policy:
        with anyio.fail_after(60), pytest.raises(PolicyHTTPError, match="engine died"):
            await run(tools, TASK, policy=policy, checkpointer=saver)
        assert len(server.requests) == 4  # plan, act, reflect + 1 retry
        checkpoints = [c async for c in saver.alist(None)]
        assert checkpoints
        before = checkpoints[0].checkpoint["channel_values"]
        done = before["turns"]
        assert [t.node for t in done] == ["plan", "act"]
        made = before["tool_calls"]
        assert [(c.name, c.ok) for c in made if c.by == "policy"] == [("text_to_image", True)]

        server.set(Completion(texts=agent_turn))
        with anyio.fail_after(60):
            result = await run(tools, TASK, policy=policy, checkpointer=saver)
    assert result.resumed
    state = result.state
    assert state["termination"] == "answered"
    assert [t.node for t in state["turns"]] == ["plan", "act", "reflect", "act"]
    assert state["turns"][:2] == done
    assert state["tool_calls"] == made  # the finished tool calls were not run again
    assert len(server.requests) == 2  # only reflect and the answer were asked again
