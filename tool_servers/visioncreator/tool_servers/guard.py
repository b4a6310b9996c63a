"""ASGI middleware that bounds what HTTP requests may hold before the MCP app sees them.

Per request, in order: the session's in-flight POSTs (429 past ``max_session_requests``), the
body's size (413 past the per-request cap), the shared body budget (503 with ``Retry-After`` past
``max_inflight_body_bytes``), the body deadline (408 past ``body_timeout_s``, then closed), and
for a POST of a session the JSON-RPC ids (409 when one is already in flight in that session).
Refusals carry a JSON-RPC error object, which the MCP client hands to the waiting caller.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visioncreator.tool_servers.body import (
    BodyBudget,
    ClientGone,
    Refusal,
    Reservation,
    drain_body,
    read_body,
)
from visioncreator.tool_servers.budget import release_free_memory
from visioncreator.tool_servers.inflight import SessionRequests

__all__ = ["RequestGuard"]

_SESSION_HEADER = "mcp-session-id"
# Bodies this large are parsed off the event loop, and freeing one is worth a heap trim.
_LARGE_BODY = 1 << 20
_INVALID_REQUEST = -32600
# The request id a flush "cancels": never one a client's request has in flight (ids are claimed).
_FLUSH_ID = "visioncreator-flush"


def _request_ids(body: bytes) -> list[object]:
    """The ids of the JSON-RPC requests in ``body`` (a message or a batch); none if it is not JSON."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []  # The SDK answers malformed JSON itself.
    messages = parsed if isinstance(parsed, list) else [parsed]
    # Requests have a method and an id; responses to the server's requests have no method.
    return [m["id"] for m in messages if isinstance(m, dict) and "method" in m and m.get("id") is not None]


@dataclass(frozen=True)
class _Refused:
    """How to answer a refused request: the refusal, the id it concerns, whether to close after."""

    refusal: Refusal
    close: bool
    request_id: object = None

    async def send(self, send: Send) -> None:
        error = {"code": self.refusal.code, "message": self.refusal.message}
        body = json.dumps({"jsonrpc": "2.0", "id": self.request_id, "error": error}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if self.refusal.retry_after_s is not None:
            headers.append((b"retry-after", str(self.refusal.retry_after_s).encode()))
        if self.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware enforcing the per-request, per-session and all-request caps of the HTTP server.

    Args:
        app: The MCP streamable HTTP app.
        max_body_bytes: Largest body one request may send.
        body_timeout_s: Seconds a request has to send its whole body.
        max_inflight_body_bytes: Body bytes all requests may hold at once.
        max_session_requests: POST requests one MCP session may have in flight at once.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
        max_inflight_body_bytes: int,
        max_session_requests: int,
    ) -> None:
        self._app = app
        self._max_body = max_body_bytes
        self._body_timeout_s = body_timeout_s
        self.budget = BodyBudget(max_inflight_body_bytes)
        self.sessions = SessionRequests(max_session_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit an HTTP request under the caps and pass it on with its body, or answer it here."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        session = headers.get(_SESSION_HEADER)
        reservation = Reservation(self.budget)
        with contextlib.ExitStack() as held:
            held.callback(reservation.release)
            try:
                with anyio.fail_after(self._body_timeout_s):
                    body = await self._admit(scope, headers, session, receive, reservation, held)
            except TimeoutError:
                body = _Refused(Refusal(408, f"request body not received within {self._body_timeout_s} s"), close=True)
            except ClientGone:
                return
            if isinstance(body, _Refused):
                # Answered outside the deadline: a refusal is sent once, whole.
                await body.send(send)
                return
            large = len(body) >= _LARGE_BODY
            await self._app(scope, _replay(body, receive), send)
            del body
            if large and session is not None and scope["method"] == "POST":
                await self._flush_session(scope, session)
        if large and self.budget.used == 0:
            release_free_memory()

    async def _admit(
        self,
        scope: Scope,
        headers: Headers,
        session: str | None,
        receive: Receive,
        reservation: Reservation,
        held: contextlib.ExitStack,
    ) -> bytes | _Refused:
        """The request's body once every cap admits it, or how to refuse it."""
        declared = _content_length(headers)
        try:
            # POSTs only: a session's one GET event stream lasts as long as the session (the SDK
            # refuses a second), so counting it would take a slot for good.
            if session is not None and scope["method"] == "POST":
                held.enter_context(self._session_slot(session))
            if declared is not None:
                if declared > self._max_body:
                    raise Refusal(413, f"request body over {self._max_body} bytes", code=_INVALID_REQUEST)
                reservation.grow(declared)
        except Refusal as refusal:
            # Read and drop the body first: closing on unread bytes would reset the connection
            # before the client reads the answer.
            drained = await drain_body(receive, max_bytes=self._max_body)
            return _Refused(refusal, close=not drained)
        try:
            body = await read_body(receive, declared=declared, max_bytes=self._max_body, reservation=reservation)
        except Refusal as refusal:
            if refusal.status == 413:
                return _Refused(refusal, close=True)  # past the per-request cap: not worth reading on
            drained = refusal.body_read or await drain_body(receive, max_bytes=self._max_body)
            return _Refused(refusal, close=not drained)
        if session is None or scope["method"] != "POST":
            return body
        ids = await anyio.to_thread.run_sync(_request_ids, body) if len(body) >= _LARGE_BODY else _request_ids(body)
        duplicate = self.sessions.claim(session, ids)
        if duplicate is not None:
            message = f"request id {json.dumps(duplicate)} is already in flight in this session; use a new id"
            return _Refused(Refusal(409, message, code=_INVALID_REQUEST), close=False, request_id=duplicate)
        held.callback(self.sessions.release, session, ids)
        return body

    async def _flush_session(self, scope: Scope, session: str) -> None:
        """Hand ``session`` a tiny message, so the SDK lets go of the large one it just handled.

        The SDK's per-session read loop keeps the last message it received (and the HTTP request
        it came in, whose cached body is the whole upload) until the next one arrives, which may be
        the session's idle timeout (30 min) later: each idle session would pin one large body. A
        ``notifications/cancelled`` naming no request in flight is ignored by the server (the
        specification allows it) and replaces that last message.
        """
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": _FLUSH_ID}}
        body = json.dumps(note).encode()
        if self.sessions.holds(session, _FLUSH_ID):
            return  # a client request uses the flush's id: cancelling it would not be harmless
        keep = {b"host", b"mcp-protocol-version"}
        headers = [(name, value) for name, value in scope["headers"] if name in keep]
        headers += [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-length", str(len(body)).encode()),
            (_SESSION_HEADER.encode(), session.encode()),
        ]
        messages: list[Message] = [{"type": "http.disconnect"}, {"type": "http.request", "body": body}]

        async def receive() -> Message:
            return messages.pop() if len(messages) > 1 else messages[0]

        async def discard(message: Message) -> None:
            pass

        with anyio.move_on_after(self._body_timeout_s):
            await self._app({**scope, "headers": headers}, receive, discard)

    @contextlib.contextmanager
    def _session_slot(self, session: str) -> Iterator[None]:
        if not self.sessions.enter(session):
            raise Refusal(
                429,
                f"this session already has {self.sessions.max_per_session} requests in flight; wait for one to finish",
                retry_after_s=1,
            )
        try:
            yield
        finally:
            self.sessions.leave(session)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        return max(int(value), 0)
    except ValueError:
        return None  # h11 refuses a malformed Content-Length before the app runs.


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that yields ``body`` once, then whatever the client sends next (its disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
