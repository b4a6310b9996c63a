"""Errors of the graph package.

The base is a plain ``Exception`` subclass on purpose: LangGraph's default retry policy
retries unknown exception types, and none of ours is worth a blind retry.
"""

from __future__ import annotations


class GraphError(Exception):
    """Base class of visioncreator.graph errors."""


class ToolServerUnavailable(GraphError):
    """The MCP tool server could not be started or reached."""


class ToolCallTimeout(GraphError):
    """A tool call did not answer within its timeout."""


class InvalidTaskError(GraphError, ValueError):
    """A task given to the agent is malformed (bad input image, impossible count...)."""
