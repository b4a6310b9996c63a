"""Build the agent: a compiled LangGraph ``StateGraph`` another app can run or embed."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

from visioncreator.graph.client import ToolClient
from visioncreator.graph.config import AgentConfig
from visioncreator.graph.nodes import Nodes
from visioncreator.graph.state import AgentInput, AgentOutput, AgentState
from visioncreator.policy import Policy
from visioncreator.tool_servers import IMAGE_TOOLS

Route = str | list[Send]


def build_agent(
    *,
    policy: Policy,
    tools: ToolClient,
    config: AgentConfig | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[AgentState, None, AgentInput, AgentOutput]:
    """Compile the plan → act → tools → reflect → finish loop.

    Args:
        policy: The policy that writes every assistant turn.
        tools: A connected MCP tool client (``async with ToolClient(...)``).
        config: Budgets and switches; defaults to :class:`AgentConfig`.
        checkpointer: Where to persist state after each step (e.g. ``AsyncSqliteSaver``);
            ``None`` compiles without one, e.g. to embed as a subgraph of a checkpointed parent.

    Returns:
        A compiled graph. Its input is ``{"task": Task.model_dump(), "seed": int}``, its output
        ``{"answer": [...handles], "termination": str, "task": ...}``.

    """
    cfg = config or AgentConfig()
    nodes = Nodes(policy=policy, tools=tools, config=cfg)
    graph: StateGraph[AgentState, None, AgentInput, AgentOutput] = StateGraph(
        AgentState, input_schema=AgentInput, output_schema=AgentOutput
    )
    graph.add_node("start", nodes.start)
    graph.add_node("inspect_inputs", nodes.inspect)  # type: ignore[arg-type]
    graph.add_node("plan", nodes.plan)
    graph.add_node("act", nodes.act)
    graph.add_node("tools", nodes.run_tool)  # type: ignore[arg-type]
    graph.add_node("collect", nodes.collect)
    graph.add_node("inspect", nodes.inspect)  # type: ignore[arg-type]
    graph.add_node("reflect", nodes.reflect)
    graph.add_node("finish", nodes.finish)

    def after_start(state: AgentState) -> Route:
        inputs = state["task"].get("inputs") or []
        if inputs and cfg.observe in ("inspect", "both"):
            return [Send("inspect_inputs", {"handle": h, "batch": 0}) for h in inputs]
        return "plan"

    def dispatch(state: AgentState, otherwise: str) -> Route:
        if state.get("termination") or state.get("answer") is not None:
            return "finish"
        pending = state.get("pending") or []
        if pending:
            return [Send("tools", {"call": c, "batch": state.get("batch", 0)}) for c in pending]
        return otherwise

    def after_plan(state: AgentState) -> Route:
        retry = "plan" if not state.get("plan") else "act"
        return dispatch(state, retry)

    def after_act(state: AgentState) -> Route:
        return dispatch(state, "act")

    def after_reflect(state: AgentState) -> Route:
        return dispatch(state, "act")

    def after_collect(state: AgentState) -> Route:
        if not cfg.reflect:
            return "act"
        batch = state.get("batch", 0)
        new = [
            r["handle"]
            for r in state.get("tool_calls", [])
            if r["batch"] == batch and r["ok"] and r["handle"] and r["name"] in IMAGE_TOOLS
        ]
        if new and cfg.observe in ("inspect", "both"):
            return [Send("inspect", {"handle": h, "batch": batch}) for h in dict.fromkeys(new)]
        return "reflect"

    graph.add_edge(START, "start")
    graph.add_conditional_edges("start", after_start, ["inspect_inputs", "plan"])
    graph.add_edge("inspect_inputs", "plan")
    graph.add_conditional_edges("plan", after_plan, ["tools", "act", "plan", "finish"])
    graph.add_conditional_edges("act", after_act, ["tools", "act", "finish"])
    graph.add_edge("tools", "collect")
    graph.add_conditional_edges("collect", after_collect, ["inspect", "reflect", "act"])
    graph.add_edge("inspect", "reflect")
    graph.add_conditional_edges("reflect", after_reflect, ["tools", "act", "finish"])
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer, name="visioncreator")
