"""visioncreator and langchain-mcp-adapters in one environment (mcp 1.x): our tools in a LangGraph agent.

``langchain-mcp-adapters`` 0.3 needs ``mcp<2``, so this runs where the project is installed on
mcp 1.x beside it (``.ci/mcp1-setup.sh`` makes that environment; CI runs this file there). The
adapters load the tools of our real stdio tool server; a LangGraph tool-calling agent (an agent
node and LangGraph's ``ToolNode``) runs text_to_image, then inspect_image on the handle it got,
then an inspect_image the server refuses. Only the chat model is scripted: it makes those calls,
reading the handle from the first tool message.
"""

from __future__ import annotations

import json
import os
import re
import sys
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

from visioncreator.graph import ToolServerSpec
from visioncreator.tool_servers.synthetic import ObserverSettings

pytestmark = pytest.mark.timeout(120)

_HANDLE = re.compile(r"^img_[0-9a-f]{24}$")
_UNKNOWN = "img_" + "0" * 24


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


async def test_langgraph_agent_runs_our_tools_through_langchain_mcp_adapters(tmp_path: Path) -> None:
    spec = ToolServerSpec.synthetic(store=tmp_path / "store", observer=ObserverSettings.exact())
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else None
    connection: Any = {"transport": "stdio", "command": sys.executable, "args": list(spec.args), "env": env}
    client = MultiServerMCPClient({"visioncreator": connection})
    async with client.session("visioncreator") as session:
        tools = await load_mcp_tools(session, server_name="visioncreator")
        assert {"text_to_image", "edit_image", "reference_to_image", "inspect_image"} <= {t.name for t in tools}
        inspect_tool = next(t for t in tools if t.name == "inspect_image")
        assert inspect_tool.metadata is not None
        assert inspect_tool.metadata.get("readOnlyHint") is True

        final = await _agent(tools).ainvoke(
            {"messages": [{"role": "user", "content": "Two red apples, then check them."}]}, {"recursion_limit": 12}
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
