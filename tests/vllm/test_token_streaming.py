"""Token streaming from the real vLLM CPU server: ``stream_mode="messages"`` over the streaming API.

The graph runs a task in ``messages`` mode, so the ``openai`` back end asks with ``"stream": true``:
each turn comes as several ``AIMessageChunk``s tagged with its node that concatenate to the
recorded text, and the turn still records the server's token ids and log-probabilities. The same
request streamed and not gives the same turn.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from tests.graph.conftest import make_client
from tests.vllm.conftest import ConstrainedPolicy, policy_settings
from visioncreator.graph import STATE_TYPES, build_agent
from visioncreator.policy import PolicyRequest, PolicyTurn, StreamingPolicy, Task, task_message
from visioncreator.policy.vllm import VLLMServer

pytestmark = pytest.mark.vllm

TASK = Task(request="a red fox next to a blue car")
TIMEOUT_S = 180.0


def test_messages_mode_streams_each_turn_token_by_token(vllm_server: VLLMServer, tmp_path: Path) -> None:
    policy = ConstrainedPolicy(policy_settings(vllm_server))
    assert isinstance(policy, StreamingPolicy)
    chunks: dict[str, list[tuple[str, AIMessageChunk]]] = defaultdict(list)
    config: Any = {"configurable": {"thread_id": "t"}, "recursion_limit": 100}

    async def go() -> list[Any]:
        async with make_client(tmp_path) as tools:
            saver = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES))
            agent = build_agent(policy=policy, tools=tools, checkpointer=saver)
            async for message, meta in agent.astream({"task": TASK, "seed": 7}, config, stream_mode="messages"):
                assert isinstance(message, AIMessageChunk)
                chunks[str(message.id)].append((meta["langgraph_node"], message))
            return list((await agent.aget_state(config)).values["turns"])

    turns = asyncio.run(asyncio.wait_for(go(), TIMEOUT_S))
    assert [t.node for t in turns] == ["plan", "act", "reflect", "act"]
    assert len(chunks) == len(turns)
    for parts, turn in zip(chunks.values(), turns, strict=True):
        assert len(parts) >= 5, (turn.node, len(parts))
        assert {node for node, _ in parts} == {turn.node}
        assert "".join(str(chunk.content) for _, chunk in parts) == turn.text
        assert turn.prompt_token_ids
        assert turn.completion_token_ids
        assert turn.logprobs is not None
        assert len(turn.logprobs) == len(turn.completion_token_ids)


async def test_the_same_request_streamed_or_not_records_the_same_turn(vllm_server: VLLMServer) -> None:
    """Text and token ids are exact; log-probabilities agree to the prefix cache's noise.

    The second request of a prompt hits vLLM's prefix cache, which computes the prompt's last
    positions along another path: the log-probabilities then differ in the fourth decimal between
    two plain requests as well (measured here, and asserted as the bound).
    """
    request = PolicyRequest(messages=(task_message(TASK),), node="plan", seed=11)
    policy = ConstrainedPolicy(policy_settings(vllm_server))
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    async def go() -> tuple[PolicyTurn, PolicyTurn, PolicyTurn]:
        first = await policy.respond(request)
        again = await policy.respond(request)
        return first, again, await policy.respond_streaming(request, on_text)

    first, again, streamed = await asyncio.wait_for(go(), TIMEOUT_S)
    assert len(pieces) >= 5
    assert "".join(pieces) == streamed.text
    exact = {"text", "parsed", "model", "prompt_token_ids", "completion_token_ids"}
    assert streamed.model_dump(include=exact) == first.model_dump(include=exact) == again.model_dump(include=exact)
    assert first.logprobs is not None
    assert again.logprobs is not None
    assert streamed.logprobs is not None
    noise = max(abs(a - b) for a, b in zip(first.logprobs, again.logprobs, strict=True))
    drift = max(abs(a - b) for a, b in zip(again.logprobs, streamed.logprobs, strict=True))
    print(f"log-probability differences: plain vs plain {noise:.2e}, plain vs streamed {drift:.2e}")
    assert drift <= max(noise * 2, 1e-5)
