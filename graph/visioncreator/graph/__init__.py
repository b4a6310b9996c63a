"""visioncreator.graph: the agent as a LangGraph state machine, its MCP client, the task runner and the CLI.

- :func:`build_agent` compiles the plan → act → tools → reflect loop for a policy and a
  tool client (:class:`ToolClient`, over stdio, streamable HTTP or in-process);
- :class:`TaskRunner` is the one path from a task to its :class:`Trajectory` (checkpoints and
  resume, ground truths, timings), used by the CLI, the evals and RL collection;
- ``langgraph.json`` serves the agent with LangGraph Server (:class:`AgentHost`: one tool session per process);
- :func:`open_agent_sync` gives the agent to sync code (``invoke``/``stream`` with a ``SqliteSaver``);
- :func:`append_jsonl` / :func:`read_jsonl` / :func:`repair_jsonl`: the durable record files.

Importing the face is cheap: each name loads its module on first use (PEP 562 ``__getattr__``),
so a command that needs no graph (``visioncreator --help``, a plugged-in subcommand) does not
import LangGraph or the MCP SDK, and ``run`` can start its tool server before it does.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visioncreator.graph.arguments import CommandParser, HelpFormatter, in_range, missing_extra
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
        folder_entries,
        inside,
        move_aside,
        remove_new,
    )
    from visioncreator.graph.hosted import AgentHost, HostSettings
    from visioncreator.graph.jsonl import JsonlError, append_jsonl, read_jsonl, repair_jsonl
    from visioncreator.graph.offline import EXPERT_TOOLS, expert_policy
    from visioncreator.graph.policies import open_policy, served_model
    from visioncreator.graph.progress import Progress, format_eta
    from visioncreator.graph.review import ReviewDecision, Reviewer, ReviewError
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
    from visioncreator.graph.sync import open_agent_sync, open_checkpointer_sync, run_task_sync
    from visioncreator.graph.trajectory import (
        SCHEMA_VERSION,
        Branch,
        Review,
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
    "AgentHost",
    "AgentInput",
    "AgentOutput",
    "AgentState",
    "Branch",
    "BranchError",
    "BranchPoint",
    "Budgets",
    "CallSeeds",
    "CheckpointCorruptError",
    "CommandParser",
    "EventHandler",
    "FileLock",
    "FolderLock",
    "FolderLockedError",
    "GraphError",
    "HelpFormatter",
    "HostSettings",
    "InvalidTaskError",
    "JsonlError",
    "PathEscapeError",
    "PolicyChoiceError",
    "PolicyTurnTimeout",
    "Progress",
    "RetrySettings",
    "Review",
    "ReviewDecision",
    "ReviewError",
    "Reviewer",
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
    "folder_entries",
    "fork",
    "format_eta",
    "image_handles",
    "in_range",
    "inside",
    "missing_extra",
    "move_aside",
    "open_agent_sync",
    "open_checkpointer",
    "open_checkpointer_sync",
    "open_policy",
    "read_jsonl",
    "remove_new",
    "repair_jsonl",
    "retry_policy",
    "run_task",
    "run_task_sync",
    "served_model",
    "thread_id_for",
]

_LAZY = {
    "CommandParser": "arguments",
    "HelpFormatter": "arguments",
    "in_range": "arguments",
    "missing_extra": "arguments",
    "BranchError": "branch",
    "BranchPoint": "branch",
    "branch_points": "branch",
    "fork": "branch",
    "Agent": "builder",
    "build_agent": "builder",
    "retry_policy": "builder",
    "ToolClient": "client",
    "ToolOutcome": "client",
    "AgentConfig": "config",
    "Budgets": "config",
    "RetrySettings": "config",
    "ToolServerSpec": "connection",
    "GraphError": "errors",
    "InvalidTaskError": "errors",
    "PolicyChoiceError": "errors",
    "PolicyTurnTimeout": "errors",
    "ToolServerLost": "errors",
    "ToolServerUnavailable": "errors",
    "CheckpointCorruptError": "folder",
    "FileLock": "folder",
    "FolderLock": "folder",
    "FolderLockedError": "folder",
    "PathEscapeError": "folder",
    "check_checkpoint": "folder",
    "inside": "folder",
    "move_aside": "folder",
    "AgentHost": "hosted",
    "HostSettings": "hosted",
    "folder_entries": "folder",
    "remove_new": "folder",
    "JsonlError": "jsonl",
    "append_jsonl": "jsonl",
    "read_jsonl": "jsonl",
    "repair_jsonl": "jsonl",
    "EXPERT_TOOLS": "offline",
    "expert_policy": "offline",
    "open_policy": "policies",
    "served_model": "policies",
    "ReviewDecision": "review",
    "ReviewError": "review",
    "Reviewer": "review",
    "Progress": "progress",
    "format_eta": "progress",
    "STATE_TYPES": "runner",
    "EventHandler": "runner",
    "RunResult": "runner",
    "TaskRunner": "runner",
    "open_checkpointer": "runner",
    "run_task": "runner",
    "thread_id_for": "runner",
    "CallSeeds": "seeds",
    "call_seed": "seeds",
    "default_call_seed_base": "seeds",
    "AgentInput": "state",
    "AgentOutput": "state",
    "AgentState": "state",
    "open_agent_sync": "sync",
    "open_checkpointer_sync": "sync",
    "run_task_sync": "sync",
    "SCHEMA_VERSION": "trajectory",
    "Branch": "trajectory",
    "Review": "trajectory",
    "Timings": "trajectory",
    "ToolCallRecord": "trajectory",
    "Trajectory": "trajectory",
    "TurnRecord": "trajectory",
    "build_trajectory": "trajectory",
    "image_handles": "trajectory",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
