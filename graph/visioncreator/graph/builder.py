"""Build the agent: a compiled LangGraph ``StateGraph`` another app can run or embed."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from langgraph._internal._runnable import RunnableCallable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy, Send

from visioncreator.graph.client import ToolClient
from visioncreator.graph.config import AgentConfig, RetrySettings
from visioncreator.graph.nodes import Nodes
from visioncreator.graph.review import ReviewNodes
from visioncreator.graph.state import AgentInput, AgentOutput, AgentState, Look, ToolTask, typed
from visioncreator.policy import Policy, Task

__all__ = ["Agent", "build_agent", "retry_policy"]

Route = str | list[Send]
_NodeFunction = Callable[[Any], Coroutine[Any, Any, Any]]
Agent = CompiledStateGraph[AgentState, None, AgentInput, AgentOutput]
"""The compiled agent: input :class:`AgentInput`, output :class:`AgentOutput`."""


def retry_policy(settings: RetrySettings) -> RetryPolicy:
    """LangGraph's ``RetryPolicy`` for ``settings``: only the named exception types are retried."""
    return RetryPolicy(
        initial_interval=settings.initial_interval_s,
        backoff_factor=settings.backoff_factor,
        max_interval=settings.max_interval_s,
        max_attempts=settings.max_attempts,
        jitter=settings.jitter,
        retry_on=settings.retry_on,
    )


@dataclass(frozen=True, slots=True)
class _Routes:
    """Where each node goes next."""

    config: AgentConfig

    def first(self, state: AgentState) -> str:
        # Input images are looked at before the plan: opening the task is then a step of its own.
        inputs = typed(Task, state["task"]).inputs
        return "start" if inputs and self.config.observe in ("inspect", "both") else "plan"

    def after_start(self, state: AgentState) -> Route:
        inputs = typed(Task, state["task"]).inputs
        if inputs and self.config.observe in ("inspect", "both"):
            return [Send("inspect_inputs", Look(handle=h, batch=0)) for h in inputs]
        return "plan"

    def _dispatch(self, state: AgentState, otherwise: str) -> Route:
        if state.get("termination") or state.get("answer") is not None:
            return END  # the turn that ended the run settled the answer
        pending = state.get("pending") or []
        if pending:
            return [Send("tools", ToolTask(call=c, batch=state.get("batch", 0))) for c in pending]
        return otherwise

    def after_plan(self, state: AgentState) -> Route:
        return self._dispatch(state, "act" if state.get("plan") else "plan")

    def after_act(self, state: AgentState) -> Route:
        return self._dispatch(state, "act")

    def after_reflect(self, state: AgentState) -> Route:
        return self._dispatch(state, "act")

    def after_propose(self, state: AgentState) -> Route:
        return "review" if state.get("proposed") else self._dispatch(state, "act")


def _both(afunc: _NodeFunction, tools: ToolClient, blocking: _NodeFunction | None = None) -> RunnableCallable:
    """A node in both forms: ``afunc`` for ``ainvoke``/``astream``, and for ``invoke``/``stream``.

    The sync form runs the same coroutine (or ``blocking``'s) on the tools' event loop, where the
    MCP session and the policy live.
    """
    sync_form = blocking or afunc

    def func(arg: Any) -> Any:
        return tools.blocking(sync_form(arg))

    return RunnableCallable(func, afunc, name=afunc.__name__, trace=False)


def build_agent(
    *,
    policy: Policy,
    tools: ToolClient,
    config: AgentConfig | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    interrupt_before: Sequence[str] | Literal["*"] | None = None,
    interrupt_after: Sequence[str] | Literal["*"] | None = None,
) -> Agent:
    """Compile the plan → act → tools → reflect loop.

    Each checkpointed step does one thing worth saving: a policy turn, or a batch of tool calls
    (one LangGraph task per call, each with the graph's look at its image). Opening the task is
    part of the first plan turn unless input images are looked at first, and the turn that ends
    the run (an answer, a budget, too many format errors) settles the answer itself.

    Args:
        policy: The policy that writes every assistant turn.
        tools: A connected MCP tool client (``async with ToolClient(...)``).
        config: Budgets, switches and the policy nodes' retries; defaults to :class:`AgentConfig`.
        checkpointer: Where to persist state after each step (e.g. from
            :func:`~visioncreator.graph.open_checkpointer`); ``None`` compiles without one, e.g. to
            embed as a subgraph of a checkpointed parent.
        interrupt_before: Nodes to pause before (LangGraph's static breakpoints, e.g. ``["reflect"]``;
            ``"*"``: every node); the run resumes with ``invoke(None, config)``. Needs a checkpointer.
        interrupt_after: Nodes to pause after, likewise.

    With ``config.review`` the graph pauses after each reflect turn for a person (see
    :mod:`visioncreator.graph.review`): the reflect node keeps the policy's turn, a ``review`` node
    interrupts with the new images and the proposed verdicts, and ``Command(resume=...)`` answers.

    Returns:
        A compiled graph. Its input is ``{"task": Task, "seed": int}`` (the task may also be its
        JSON dict), its output ``{"answer": [...handles], "termination": str, "task": Task}``.

    """
    cfg = config or AgentConfig()
    nodes = Nodes(policy=policy, tools=tools, config=cfg)
    routes = _Routes(cfg)
    retry = retry_policy(cfg.policy_retry)
    graph: StateGraph[AgentState, None, AgentInput, AgentOutput] = StateGraph(
        AgentState, input_schema=AgentInput, output_schema=AgentOutput
    )
    # Each node runs async or sync (see _both); a Send payload is the input of inspect_inputs and tools.
    graph.add_node("start", _both(nodes.start, tools), input_schema=AgentState)
    graph.add_node("inspect_inputs", _both(nodes.inspect, tools), input_schema=Look)
    graph.add_node("plan", _both(nodes.plan, tools), input_schema=AgentState, retry_policy=retry)
    graph.add_node("act", _both(nodes.act, tools), input_schema=AgentState, retry_policy=retry)
    tools_node = _both(nodes.run_tool, tools, partial(nodes.run_tool, blocking=True))
    graph.add_node("tools", tools_node, input_schema=ToolTask)
    graph.add_conditional_edges(START, routes.first, ["start", "plan"])
    graph.add_conditional_edges("start", routes.after_start, ["inspect_inputs", "plan"])
    graph.add_edge("inspect_inputs", "plan")
    graph.add_conditional_edges("plan", routes.after_plan, ["tools", "act", "plan", END])
    graph.add_conditional_edges("act", routes.after_act, ["tools", "act", END])
    # Each tool task looks at its own image, so the batch joins straight into the next policy turn:
    # one checkpointed step per batch (no separate join or inspection steps).
    graph.add_edge("tools", "reflect" if cfg.reflect else "act")
    _add_reflect(graph, nodes, routes, retry)
    return graph.compile(
        checkpointer=checkpointer,
        interrupt_before=_nodes(interrupt_before),
        interrupt_after=_nodes(interrupt_after),
        name="visioncreator",
    )


def _add_reflect(
    graph: StateGraph[AgentState, None, AgentInput, AgentOutput], nodes: Nodes, routes: _Routes, retry: RetryPolicy
) -> None:
    """The reflect node and where it goes; with review, the ``review`` node after it."""
    if not routes.config.review:
        graph.add_node("reflect", _both(nodes.reflect, nodes.tools), input_schema=AgentState, retry_policy=retry)
        graph.add_conditional_edges("reflect", routes.after_reflect, ["tools", "act", END])
        return
    reviewing = ReviewNodes(nodes)
    graph.add_node("reflect", _both(reviewing.propose, nodes.tools), input_schema=AgentState, retry_policy=retry)
    graph.add_node("review", _both(reviewing.review, nodes.tools), input_schema=AgentState)
    graph.add_conditional_edges("reflect", routes.after_propose, ["review", "tools", "act", END])
    graph.add_conditional_edges("review", routes.after_reflect, ["tools", "act", END])


def _nodes(names: Sequence[str] | Literal["*"] | None) -> list[str] | Literal["*"] | None:
    return names if names is None or names == "*" else list(names)
