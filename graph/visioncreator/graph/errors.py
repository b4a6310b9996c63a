"""Errors of the graph package: one base, :class:`GraphError`.

Which errors a run retries is decided per node by an explicit ``RetryPolicy`` (see
``AgentConfig.policy_retry``), never by an exception's base class.
"""

from __future__ import annotations

__all__ = [
    "GraphError",
    "InvalidTaskError",
    "PolicyChoiceError",
    "PolicyTurnTimeout",
    "ToolServerLost",
    "ToolServerUnavailable",
]


class GraphError(Exception):
    """Base class of every error raised by ``visioncreator.graph``."""


class ToolServerUnavailable(GraphError):
    """The MCP tool server could not be started or reached."""


class ToolServerLost(ToolServerUnavailable):
    """The tool server went away mid-task (closed connection, crash, a storm of HTTP 5xx).

    An outage, never a tool error: the run stops, nothing after the last finished step is
    checkpointed, and re-running the same task resumes there with the server restarted.

    Args:
        message: What was lost, and why.
        generation: The client session that was lost (see ``ToolClient.reconnect``); -1 if unknown.
    """

    def __init__(self, message: str, *, generation: int = -1) -> None:
        super().__init__(message)
        self.generation = generation


class InvalidTaskError(GraphError, ValueError):
    """A task given to the agent is malformed (bad input image, impossible count...)."""


class PolicyChoiceError(GraphError, ValueError):
    """A ``--policy`` value (or ``open_policy`` spec) names nothing usable."""


class PolicyTurnTimeout(GraphError):
    """A policy turn took longer than ``AgentConfig.policy_timeout_s``."""
