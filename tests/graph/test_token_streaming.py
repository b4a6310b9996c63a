"""``stream_mode="messages"``: policy turns token by token as ``AIMessageChunk``s tagged with their node.

Against the real tool server in-process, with the scripted expert (one chunk per turn: it has no
tokens), the local transformers policy on a tiny random model (a chunk per few tokens), and the
``openai`` back end against the fake chat server (which records whether a request streamed). The
real vLLM server's stream: ``tests/vllm/test_token_streaming.py``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from tests.fakes.chat_server import Completion, FakeChatServer
from tests.graph.conftest import make_client
from visioncreator.graph import AgentConfig, Budgets, PolicyTurnTimeout, TurnRecord, build_agent, expert_policy
from visioncreator.policy import (
    LocalPolicySettings,
    OpenAIPolicy,
    OpenAIPolicySettings,
    PlanStep,
    Policy,
    PolicyRequest,
    Task,
    TransformersPolicy,
    build_tiny_lm,
    task_message,
    write_plan,
)
from visioncreator.tool_servers import POLICY_TOOLS

TASK = Task(request="a red fox next to a blue car")
CONFIG = {"configurable": {"thread_id": "t"}, "recursion_limit": 200}
Chunks = dict[str, list[tuple[str, AIMessageChunk]]]


@asynccontextmanager
async def agent_for(store: Path, policy: Policy, config: AgentConfig | None = None) -> AsyncIterator[Any]:
    async with make_client(store) as tools:
        yield build_agent(policy=policy, tools=tools, config=config, checkpointer=InMemorySaver())


async def stream_messages(agent: Any, **kwargs: Any) -> tuple[Chunks, list[TurnRecord], list[dict[str, Any]]]:
    """Run the task with ``messages``, ``custom`` and ``values``: the chunks by message id, the turns, the events."""
    chunks: Chunks = defaultdict(list)
    events: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    with anyio.fail_after(120):
        stream = agent.astream(
            {"task": TASK, "seed": 3}, CONFIG, stream_mode=["messages", "custom", "values"], **kwargs
        )
        async for part in stream:
            mode, item = part[-2:]
            if mode == "messages":
                message, meta = item
                assert isinstance(message, AIMessageChunk)
                chunks[str(message.id)].append((meta["langgraph_node"], message))
            elif mode == "custom":
                events.append(item)
            else:
                state = item
    return chunks, list(state.get("turns", ())), events


def assert_turns_streamed(chunks: Chunks, turns: list[TurnRecord]) -> None:
    """One message per turn, in order, each tagged with the turn's node, its chunks concatenating to its text."""
    assert len(chunks) == len(turns)
    for parts, turn in zip(chunks.values(), turns, strict=True):
        assert {node for node, _ in parts} == {turn.node}
        assert "".join(str(chunk.content) for _, chunk in parts) == turn.text


async def test_the_expert_sends_each_turn_as_one_chunk_tagged_with_its_node(tmp_path: Path) -> None:
    async with agent_for(tmp_path, expert_policy()) as agent:
        chunks, turns, events = await stream_messages(agent)
    assert [t.node for t in turns] == ["plan", "act", "reflect", "act"]
    assert all(len(v) == 1 for v in chunks.values())
    assert_turns_streamed(chunks, turns)
    # the custom stream is unchanged beside it
    assert [e["event"] for e in events if e["event"] in ("start", "turn", "finish")] == [
        "start", "turn", "turn", "turn", "turn", "finish",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path_factory.mktemp("tiny") / "model")


def local_policy(model_dir: Path) -> TransformersPolicy:
    settings = LocalPolicySettings(max_new_tokens=32, seed=0, torch_threads=1)
    return TransformersPolicy(model_dir, settings=settings)


async def test_the_local_policy_streams_its_turns_token_by_token(tmp_path: Path, tiny_dir: Path) -> None:
    config = AgentConfig(budgets=Budgets(max_turns=3))
    async with agent_for(tmp_path / "a", local_policy(tiny_dir), config) as agent:
        chunks, turns, _ = await stream_messages(agent)
    assert len(turns) == 3
    assert all(len(v) > 3 for v in chunks.values()), [len(v) for v in chunks.values()]
    assert_turns_streamed(chunks, turns)
    # Recorded as a run that nobody streams records it: the same text, ids and log-probabilities.
    async with agent_for(tmp_path / "b", local_policy(tiny_dir), config) as agent:
        with anyio.fail_after(120):
            await agent.ainvoke({"task": TASK, "seed": 3}, CONFIG)
        plain = (await agent.aget_state(CONFIG)).values
    fields = ("node", "text", "prompt_token_ids", "completion_token_ids", "logprobs")
    assert [t.model_dump(include=set(fields)) for t in plain["turns"]] == [
        t.model_dump(include=set(fields)) for t in turns
    ]


@pytest.fixture(scope="module")
def chat() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        yield fake


async def test_the_http_policy_streams_only_while_someone_listens(tmp_path: Path, chat: FakeChatServer) -> None:
    plan = write_plan([PlanStep(step=1, goal="a red fox", tool="text_to_image")])
    chat.set(Completion(texts=[plan]))
    settings = OpenAIPolicySettings(base_url=chat.base_url, model="fake", send_images=False, timeout_s=10.0)
    config = AgentConfig(budgets=Budgets(max_turns=2))
    async with OpenAIPolicy(settings) as policy, agent_for(tmp_path, policy, config) as agent:
        with anyio.fail_after(60):
            await agent.ainvoke({"task": TASK, "seed": 3}, {**CONFIG, "configurable": {"thread_id": "a"}})
            async for _ in agent.astream(
                {"task": TASK, "seed": 3}, {**CONFIG, "configurable": {"thread_id": "b"}}, stream_mode=["custom"]
            ):
                pass
        assert [r.get("stream", False) for r in chat.requests] == [False] * 4
        chat.set(Completion(texts=[plan]))
        chunks, turns, _ = await stream_messages(agent)
    assert [r.get("stream", False) for r in chat.requests] == [True, True]
    assert all(len(v) == len(plan) for v in chunks.values())  # the fake streams a chunk per character
    assert_turns_streamed(chunks, turns)


class Parent(TypedDict, total=False):
    task: Any
    seed: int
    answer: Any
    termination: Any


def parent_of(agent: Any, how: str) -> Any:
    graph: StateGraph[Parent, None, Parent, Parent] = StateGraph(Parent)
    if how == "node":
        graph.add_node("agent", agent)
    else:

        async def call(state: Parent) -> Parent:
            out = await agent.ainvoke({"task": state["task"], "seed": state["seed"]})
            return {"answer": out["answer"]}

        graph.add_node("agent", call)
    graph.add_edge(START, "agent")
    graph.add_edge("agent", END)
    return graph.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("how", ["node", "call"])
async def test_an_embedded_agent_streams_messages_and_progress_with_subgraphs_only(tmp_path: Path, how: str) -> None:
    """As a subgraph (a node of the parent, or run inside a parent's node), both need ``subgraphs=True``."""
    async with make_client(tmp_path) as tools:
        parent = parent_of(build_agent(policy=expert_policy(), tools=tools), how)
        chunks, _, events = await stream_messages(parent)
        assert not chunks
        assert not events
        parts = []
        with anyio.fail_after(120):
            stream = parent.astream(
                {"task": TASK, "seed": 3},
                {**CONFIG, "configurable": {"thread_id": "sub"}},
                stream_mode=["messages", "custom"],
                subgraphs=True,
            )
            async for namespace, mode, item in stream:
                parts.append((namespace, mode, item))
    messages = [(ns, item) for ns, mode, item in parts if mode == "messages"]
    assert [meta["langgraph_node"] for _, (_, meta) in messages] == ["plan", "act", "reflect", "act"]
    assert all(ns and ns[0].startswith("agent:") for ns, _ in messages)
    assert any(mode == "custom" and item["event"] == "finish" for _, mode, item in parts)


async def test_astream_events_sees_the_tokens_too(tmp_path: Path, tiny_dir: Path) -> None:
    config = AgentConfig(budgets=Budgets(max_turns=1))
    async with agent_for(tmp_path, local_policy(tiny_dir), config) as agent:
        seen: list[str] = []
        with anyio.fail_after(120):
            async for event in agent.astream_events({"task": TASK, "seed": 3}, CONFIG, version="v2"):
                if event["event"] == "on_chat_model_stream":
                    assert event["metadata"]["langgraph_node"] == "plan"
                    seen.append(str(event["data"]["chunk"].content))
        state = await agent.aget_state(CONFIG)
    (turn,) = state.values["turns"]
    assert len(seen) > 3
    assert "".join(seen) == turn.text


async def test_a_streamed_turn_cut_by_the_policy_timeout_frees_the_model(tmp_path: Path, tiny_dir: Path) -> None:
    settings = LocalPolicySettings(max_new_tokens=4000, max_prompt_tokens=4000, seed=0, torch_threads=1)
    policy = TransformersPolicy(tiny_dir, settings=settings)
    policy.load()
    async with agent_for(tmp_path, policy, AgentConfig(policy_timeout_s=0.5)) as agent:
        with pytest.raises(PolicyTurnTimeout):
            await stream_messages(agent)
    started = time.perf_counter()
    with anyio.fail_after(60):
        turn = await policy.respond(PolicyRequest(messages=(task_message(TASK),), node="plan", seed=1))
    assert turn.completion_token_ids
    assert time.perf_counter() - started < 30
