"""Errors of the policy package: one base, :class:`PolicyError`.

Format problems in model output are never raised (they are reported as
:class:`~visioncreator.policy.types.FormatError` values). These exceptions are for callers that
misuse the API (also ``ValueError``s) and for model servers that cannot answer
(:class:`PolicyTransportError` and its subclasses, raised after the back end's own retries).
Whether a run retries a node on one of them is the graph's decision, made explicitly per node
(``visioncreator.graph.AgentConfig.policy_retry``), never by the exception's base class.
"""

from __future__ import annotations

__all__ = [
    "FormatWriteError",
    "MissingTaskError",
    "PolicyConnectionError",
    "PolicyContextError",
    "PolicyContextLengthError",
    "PolicyError",
    "PolicyHTTPError",
    "PolicyResponseError",
    "PolicyResponseTooLargeError",
    "PolicyTimeoutError",
    "PolicyTransportError",
]


class PolicyError(Exception):
    """Base class of every error raised by ``visioncreator.policy``."""


class FormatWriteError(PolicyError, ValueError):
    """A writer was given text that cannot be written in the canonical format without breaking it.

    A ``ValueError`` on purpose: a retry cannot fix it.
    """


class MissingTaskError(PolicyError, ValueError):
    """A policy that needs the task found no ``<task>`` message in the conversation."""


class PolicyTransportError(PolicyError):
    """The model server could not give a usable answer (after the back end's own retries)."""


class PolicyConnectionError(PolicyTransportError):
    """Nothing answered at the server's address (refused, reset, DNS, connect timeout), after retries."""


class PolicyTimeoutError(PolicyTransportError):
    """The server accepted the request but did not answer within the read timeout (not retried here)."""


class PolicyHTTPError(PolicyTransportError):
    """The server answered with an HTTP error status: a 4xx at once, a 5xx after the retries.

    Attributes:
        status: The HTTP status code.
        server_message: The error message the server sent (``error.message`` or ``message`` of its
            JSON body, else the start of the body).
        attempts: How many requests were made.

    """

    def __init__(self, status: int, server_message: str, *, attempts: int = 1, url: str = "") -> None:
        self.status = status
        self.server_message = server_message
        self.attempts = attempts
        self.url = url
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"model server {url} answered HTTP {status}{tries}: {server_message}")


class PolicyContextLengthError(PolicyHTTPError):
    """The server refused the prompt as longer than the model's context (an HTTP 400)."""


class PolicyResponseError(PolicyTransportError):
    """The server answered 200 with a body that is not a chat completion (bad JSON, wrong shape)."""


class PolicyResponseTooLargeError(PolicyResponseError):
    """The server's answer is larger than the back end accepts.

    A body over ``max_response_bytes``, or a completion over ``max_tokens`` (a server that ignores
    the limit it was sent).

    Not retried by the back end: the same request would most likely get the same answer. Reading
    stops at the limit, so the oversize body is never held in memory.

    Attributes:
        limit: The limit crossed.
        size: How much came (for a body: at least this many bytes; reading stopped there).
        unit: ``"bytes"``, ``"tokens"`` or ``"characters"``.

    """

    def __init__(self, message: str, *, limit: int, size: int, unit: str) -> None:
        self.limit = limit
        self.size = size
        self.unit = unit
        super().__init__(message)


class PolicyContextError(PolicyError, ValueError):
    """A local back end's prompt is longer than the model's context (``on_context_overflow='raise'``).

    A ``ValueError``: resuming would hit it again. The HTTP back end's counterpart is
    :class:`PolicyContextLengthError` (the server's HTTP 400).
    """
