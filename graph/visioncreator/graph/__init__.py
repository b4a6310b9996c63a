"""visioncreator.graph: the agent as a LangGraph state machine, its MCP client and its CLI."""

from visioncreator.graph.builder import build_agent
from visioncreator.graph.client import ToolClient, ToolOutcome, ToolServerSpec
from visioncreator.graph.config import AgentConfig, Budgets
from visioncreator.graph.errors import GraphError, InvalidTaskError, ToolCallTimeout, ToolServerUnavailable
from visioncreator.graph.runner import RunResult, open_checkpointer, run_task, thread_id_for
from visioncreator.graph.state import AgentInput, AgentOutput, AgentState
from visioncreator.graph.trajectory import Trajectory, build_trajectory

__all__ = [
    "AgentConfig",
    "AgentInput",
    "AgentOutput",
    "AgentState",
    "Budgets",
    "GraphError",
    "InvalidTaskError",
    "RunResult",
    "ToolCallTimeout",
    "ToolClient",
    "ToolOutcome",
    "ToolServerSpec",
    "ToolServerUnavailable",
    "Trajectory",
    "build_agent",
    "build_trajectory",
    "open_checkpointer",
    "run_task",
    "thread_id_for",
]
