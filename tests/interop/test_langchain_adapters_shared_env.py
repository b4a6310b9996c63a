"""visioncreator and langchain-mcp-adapters in one environment (mcp 1.x): our tools in a LangGraph agent.

``langchain-mcp-adapters`` 0.3 needs ``mcp<2``, so this runs where the project is installed on
mcp 1.x beside it (``.ci/mcp1-setup.sh`` makes that environment; CI runs this file there). The
adapters load the tools of our real tool server (spawned over stdio, or over streamable HTTP with
a bearer token); a LangGraph tool-calling agent (an agent node and LangGraph's ``ToolNode``) runs
text_to_image, then inspect_image on the handle it got, then an inspect_image the server refuses.
Only the chat model is scripted: it makes those calls, reading the handle from the first tool message.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_mcp_adapters", reason="needs the mcp 1.x environment of .ci/mcp1-setup.sh")

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from tests.security._tool_server import tool_server

pytestmark = pytest.mark.timeout(120)

_HANDLE = re.compile(r"^img_[0-9a-f]{24}$")
_UNKNOWN = "img_" + "0" * 24
TOKEN = "shared-env-token-0123456789abcdef"
# The server's inspect_image reports the ground truth exactly (no perception errors), no faults.
EXACT = (
    *("--fault-rate", "0", "--observe-miss-rate", "0", "--observe-count-rate", "0"),
    *("--observe-color-rate", "0", "--observe-ocr-rate", "0"),
)


class _ScriptedToolCaller(BaseChatModel):
    """A chat model that makes a fixed sequence of tool calls, the second one on the first's handle."""

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            call = {"name": "text_to_image", "args": {"prompt": "two red apples", "seed": 7}, "id": "call-1"}
        elif len(results) == 1:
            handle = results[0].artifact["structured_content"]["handle"]
            call = {
                "name": "inspect_image",
                "args": {"image": handle, "questions": ["how many apples?"]},
                "id": "call-2",
            }
        elif len(results) == 2:
            call = {"name": "inspect_image", "args": {"image": _UNKNOWN}, "id": "call-3"}
        else:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="done"))])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="", tool_calls=[call]))])


def _agent(tools: list[Any]) -> Any:
    """A LangGraph tool-calling agent: the model's node, LangGraph's ToolNode, and the edge between them."""
    model = _ScriptedToolCaller()

    async def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


@asynccontextmanager
async def _connection(transport: str, root: Path) -> AsyncIterator[dict[str, Any]]:
    """How the adapters reach a real tool server: one they spawn over stdio, or one over HTTP with a token."""
    if transport == "stdio":
        env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else None
        args = ["-m", "visioncreator.tool_servers", "--store", str(root / "store"), *EXACT]
        yield {"transport": "stdio", "command": sys.executable, "args": args, "env": env}
        return
    with tool_server(root, *EXACT, env={"VISIONCREATOR_TOKEN": TOKEN}) as server:
        yield {"transport": "streamable_http", "url": server.url, "headers": {"Authorization": f"Bearer {TOKEN}"}}


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_langgraph_agent_runs_our_tools_through_langchain_mcp_adapters(transport: str, tmp_path: Path) -> None:
    async with _connection(transport, tmp_path) as connection:
        client = MultiServerMCPClient({"visioncreator": connection})
        # One session for the whole run: get_tools() alone would open a session (and over stdio
        # start a server) for every call.
        async with client.session("visioncreator") as session:
            tools = await load_mcp_tools(session, server_name="visioncreator")
            assert {"text_to_image", "edit_image", "reference_to_image", "inspect_image"} <= {t.name for t in tools}
            inspect_tool = next(t for t in tools if t.name == "inspect_image")
            assert inspect_tool.metadata is not None
            assert inspect_tool.metadata.get("readOnlyHint") is True

            final = await _agent(tools).ainvoke(
                {"messages": [{"role": "user", "content": "Two red apples, then check them."}]},
                {"recursion_limit": 12},
            )

    made, seen, refused = (m for m in final["messages"] if isinstance(m, ToolMessage))
    image = made.artifact["structured_content"]
    assert made.status == "success"
    assert _HANDLE.match(image["handle"])
    assert (image["width"], image["height"], image["seed"]) == (512, 512, 7)
    assert json.loads(made.content[0]["text"]) == image  # the text block carries the same JSON

    inspection = seen.artifact["structured_content"]
    assert seen.status == "success"
    assert inspection["handle"] == image["handle"]
    assert inspection["counts"] == {"apple": 2}
    assert all(o["color"] == "red" for o in inspection["objects"])

    assert refused.status == "error"
    assert refused.artifact is None
    assert "unknown image handle" in str(refused.content)
    assert final["messages"][-1].content == "done"
