"""Errors of the policy package.

Format problems in model output are never raised (they are reported as
:class:`~visioncreator.policy.types.FormatError` values); these exceptions are for callers that
misuse the API.
"""

from __future__ import annotations

__all__ = ["FormatWriteError", "MissingTaskError", "PolicyError"]


class PolicyError(Exception):
    """Base class of every error raised by ``visioncreator.policy``."""


class FormatWriteError(PolicyError, ValueError):
    """A writer was given text that cannot be written in the canonical format without breaking it.

    A ``ValueError`` on purpose: a retry cannot fix it.
    """


class MissingTaskError(PolicyError, ValueError):
    """A policy that needs the task found no ``<task>`` message in the conversation."""
