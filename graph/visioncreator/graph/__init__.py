"""visioncreator.graph: the agent as a LangGraph state machine, its MCP client, the task runner and the CLI.

- :func:`build_agent` compiles the plan → act → tools → reflect → finish loop for a policy and a
  tool client (:class:`ToolClient`, over stdio, streamable HTTP or in-process);
- :class:`TaskRunner` is the one path from a task to its :class:`Trajectory` (checkpoints and
  resume, ground truths, timings), used by the CLI, the evals and RL collection;
- :func:`append_jsonl` / :func:`read_jsonl` / :func:`repair_jsonl`: the durable record files.
"""

from visioncreator.graph.branch import BranchError, BranchPoint, branch_points, fork
from visioncreator.graph.builder import Agent, build_agent, retry_policy
from visioncreator.graph.client import ToolClient, ToolOutcome
from visioncreator.graph.config import AgentConfig, Budgets, RetrySettings
from visioncreator.graph.connection import ToolServerSpec
from visioncreator.graph.errors import (
    GraphError,
    InvalidTaskError,
    PolicyChoiceError,
    PolicyTurnTimeout,
    ToolServerLost,
    ToolServerUnavailable,
)
from visioncreator.graph.folder import (
    CheckpointCorruptError,
    FileLock,
    FolderLock,
    FolderLockedError,
    PathEscapeError,
    check_checkpoint,
    inside,
    move_aside,
)
from visioncreator.graph.jsonl import JsonlError, append_jsonl, read_jsonl, repair_jsonl
from visioncreator.graph.offline import EXPERT_TOOLS, expert_policy
from visioncreator.graph.policies import open_policy, served_model
from visioncreator.graph.runner import (
    STATE_TYPES,
    EventHandler,
    RunResult,
    TaskRunner,
    open_checkpointer,
    run_task,
    thread_id_for,
)
from visioncreator.graph.seeds import CallSeeds, call_seed, default_call_seed_base
from visioncreator.graph.state import AgentInput, AgentOutput, AgentState
from visioncreator.graph.trajectory import (
    SCHEMA_VERSION,
    Branch,
    Timings,
    ToolCallRecord,
    Trajectory,
    TurnRecord,
    build_trajectory,
    image_handles,
)

__all__ = [
    "EXPERT_TOOLS",
    "SCHEMA_VERSION",
    "STATE_TYPES",
    "Agent",
    "AgentConfig",
    "AgentInput",
    "AgentOutput",
    "AgentState",
    "Branch",
    "BranchError",
    "BranchPoint",
    "Budgets",
    "CallSeeds",
    "CheckpointCorruptError",
    "EventHandler",
    "FileLock",
    "FolderLock",
    "FolderLockedError",
    "GraphError",
    "InvalidTaskError",
    "JsonlError",
    "PathEscapeError",
    "PolicyChoiceError",
    "PolicyTurnTimeout",
    "RetrySettings",
    "RunResult",
    "TaskRunner",
    "Timings",
    "ToolCallRecord",
    "ToolClient",
    "ToolOutcome",
    "ToolServerLost",
    "ToolServerSpec",
    "ToolServerUnavailable",
    "Trajectory",
    "TurnRecord",
    "append_jsonl",
    "branch_points",
    "build_agent",
    "build_trajectory",
    "call_seed",
    "check_checkpoint",
    "default_call_seed_base",
    "expert_policy",
    "fork",
    "image_handles",
    "inside",
    "move_aside",
    "open_checkpointer",
    "open_policy",
    "read_jsonl",
    "repair_jsonl",
    "retry_policy",
    "run_task",
    "served_model",
    "thread_id_for",
]
