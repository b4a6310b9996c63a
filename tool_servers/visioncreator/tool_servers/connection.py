"""Connection-level caps for the HTTP server: how many connections, and how long headers may take.

uvicorn (0.55, h11) has neither: a client that connects and never finishes its request line and
headers holds a connection (and its buffers) until it goes away, and ``limit_concurrency`` only
answers 503 once a whole request has arrived. These caps act on the asyncio protocol itself, so
they cost nothing per byte and need no request to arrive.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_protocol"]

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: 36\r\n\r\n"
    b"too many connections; retry shortly\n"
)


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a header deadline (set by ``guarded_protocol``)."""

    max_connections: int = 0
    header_timeout_s: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        # The request cycle current when the deadline was armed: a new cycle means the next
        # request's headers have all arrived.
        self._armed_cycle: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The set already counts this connection: refuse it before it can hold anything.
        if len(self.connections) > self.max_connections:
            transport.write(_BUSY)
            transport.close()
            return
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_deadline is not None and self.cycle is not self._armed_cycle:
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        # A kept-alive connection gets a fresh deadline for its next request's headers, unless a
        # pipelined request was already read (a new cycle) or the connection is closing.
        if not self.transport.is_closing() and self.cycle is cycle:
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._armed_cycle = self.cycle
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            # No response: the client has not finished a request to answer (or sent nothing).
            self.transport.close()


def guarded_protocol(*, max_connections: int, header_timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` that enforces both caps.

    Args:
        max_connections: Connections served at once; one more is sent a 503 (``Retry-After: 1``,
            ``Connection: close``) and closed as soon as it is accepted.
        header_timeout_s: Seconds from accepting a connection, or from finishing a response on a
            kept-alive one, until the next request's headers must have arrived; a slower client is
            closed without a response.

    Returns:
        A subclass of uvicorn's ``H11Protocol`` with the two caps bound.
    """
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"max_connections": max_connections, "header_timeout_s": header_timeout_s},
    )
