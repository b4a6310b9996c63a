"""Errors of the graph package: one base, :class:`GraphError`.

Which errors a run retries is decided per node by an explicit ``RetryPolicy`` (see
``AgentConfig.policy_retry``), never by an exception's base class.
"""

from __future__ import annotations

__all__ = ["GraphError", "InvalidTaskError", "PolicyChoiceError", "PolicyTurnTimeout", "ToolServerUnavailable"]


class GraphError(Exception):
    """Base class of every error raised by ``visioncreator.graph``."""


class ToolServerUnavailable(GraphError):
    """The MCP tool server could not be started or reached."""


class InvalidTaskError(GraphError, ValueError):
    """A task given to the agent is malformed (bad input image, impossible count...)."""


class PolicyChoiceError(GraphError, ValueError):
    """A ``--policy`` value (or ``open_policy`` spec) names nothing usable."""


class PolicyTurnTimeout(GraphError):
    """A policy turn took longer than ``AgentConfig.policy_timeout_s``."""
