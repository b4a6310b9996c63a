"""visioncreator.graph: the agent as a LangGraph state machine, its MCP client and its CLI."""

from visioncreator.graph.builder import build_agent
from visioncreator.graph.client import ToolClient, ToolOutcome, ToolServerSpec
from visioncreator.graph.config import AgentConfig, Budgets
from visioncreator.graph.errors import (
    GraphError,
    InvalidTaskError,
    PolicyChoiceError,
    PolicyTurnTimeout,
    ToolServerUnavailable,
)
from visioncreator.graph.offline import EXPERT_TOOLS, expert_policy
from visioncreator.graph.policies import open_policy, served_model
from visioncreator.graph.runner import RunResult, open_checkpointer, run_task, thread_id_for
from visioncreator.graph.state import AgentInput, AgentOutput, AgentState
from visioncreator.graph.trajectory import Trajectory, build_trajectory, image_handles

__all__ = [
    "EXPERT_TOOLS",
    "AgentConfig",
    "AgentInput",
    "AgentOutput",
    "AgentState",
    "Budgets",
    "GraphError",
    "InvalidTaskError",
    "PolicyChoiceError",
    "PolicyTurnTimeout",
    "RunResult",
    "ToolClient",
    "ToolOutcome",
    "ToolServerSpec",
    "ToolServerUnavailable",
    "Trajectory",
    "build_agent",
    "build_trajectory",
    "expert_policy",
    "image_handles",
    "open_checkpointer",
    "open_policy",
    "run_task",
    "served_model",
    "thread_id_for",
]
