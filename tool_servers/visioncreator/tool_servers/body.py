"""Request bodies under a deadline, a per-request cap and one budget shared by all requests.

Each request's body is read whole before the application sees it (MCP bodies are single JSON-RPC
messages, bounded by the per-request cap), so the bytes that all requests hold at once are what the
``BodyBudget`` admits: a ``Content-Length`` is reserved before a byte is read, a chunked body as it
streams in.
"""

from __future__ import annotations

from starlette.types import Receive

__all__ = ["BodyBudget", "ClientGone", "Refusal", "Reservation", "drain_body", "read_body"]


class Refusal(Exception):
    """A request the guard answers itself instead of passing it on.

    Args:
        status: HTTP status code.
        message: What the client reads (also the JSON-RPC error message).
        code: JSON-RPC error code.
        retry_after_s: Seconds for a ``Retry-After`` header, when trying later can help.

    Attributes:
        body_read: Whether the request's body had been read to its end (nothing left to drain).
    """

    def __init__(self, status: int, message: str, *, code: int = -32000, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after_s = retry_after_s
        self.body_read = False


class ClientGone(Exception):
    """The client disconnected before its body arrived: nobody is left to answer."""


class BodyBudget:
    """Request body bytes all requests may hold at once (``ServerSettings.max_inflight_body_bytes``).

    Args:
        max_bytes: The budget.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def take(self, n: int) -> bool:
        """Take ``n`` bytes if they fit; False (nothing taken) if they would pass the budget."""
        if self.used + n > self.max_bytes:
            return False
        self.used += n
        return True

    def give_back(self, n: int) -> None:
        """Return ``n`` bytes taken earlier."""
        self.used -= n


class Reservation:
    """The part of a ``BodyBudget`` one request holds; give it all back with ``release``.

    Args:
        budget: The shared budget.
    """

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0

    def grow(self, n: int) -> None:
        """Hold ``n`` more bytes.

        Raises:
            Refusal: 503 with ``Retry-After`` when the budget has no room for them now.
        """
        if not self._budget.take(n):
            raise Refusal(
                503,
                f"the server is holding {self._budget.used} of its {self._budget.max_bytes} bytes of request bodies; "
                "retry shortly",
                retry_after_s=1,
            )
        self.held += n

    def release(self) -> None:
        """Give everything held back (idempotent)."""
        self._budget.give_back(self.held)
        self.held = 0


async def read_body(receive: Receive, *, declared: int | None, max_bytes: int, reservation: Reservation) -> bytes:
    """Read one request's whole body; the caller bounds the time it may take.

    Args:
        receive: The ASGI receive callable.
        declared: The ``Content-Length`` (already reserved and checked against ``max_bytes``), or
            None for a chunked body, which is reserved chunk by chunk.
        max_bytes: The per-request cap.
        reservation: Where a chunked body's bytes are counted.

    Raises:
        Refusal: 413 past ``max_bytes``; 503 when a chunk does not fit the budget.
        ClientGone: The client disconnected first.
    """
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        received += len(chunk)
        if received > max_bytes:
            raise Refusal(413, f"request body over {max_bytes} bytes", code=-32600)
        more = message.get("more_body", False)
        if declared is None:
            try:
                reservation.grow(len(chunk))
            except Refusal as refusal:
                refusal.body_read = not more
                raise
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


async def drain_body(receive: Receive, *, max_bytes: int) -> bool:
    """Read and drop a body the guard refuses, so the client gets to read the answer.

    Closing on unread bytes would reset the connection and lose the answer. The caller bounds the
    time this may take.

    Returns:
        Whether the whole body was read: False past ``max_bytes`` (then close the connection).
    """
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        received += len(message.get("body", b""))
        if received > max_bytes:
            return False
        if not message.get("more_body", False):
            return True
