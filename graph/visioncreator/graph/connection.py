"""One live MCP session to a tool server, and how to tell an outage from a tool error.

A session is held open by its own task: the MCP client's task group must be exited by the task
that entered it, and a lost server must be replaceable from whichever task noticed (an eval runs
many tasks over one client). :func:`open_connection` starts that task and returns once the
server has listed its tools; :meth:`Connection.close` ends it.

Over HTTP, a transport failure (connection refused or reset) would crash the SDK's writer task
and cancel every call in flight; :class:`_OutageTransport` turns it into a 503 answer instead,
which reaches the caller as an error it can classify (:func:`is_outage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from mcp import StdioServerParameters
from mcp.types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, ListToolsResult

from visioncreator.graph.mcp_compat import (
    Client,
    MCPError,
    error_code,
    error_message,
    http,
    readable_error_answer,
    streamable_http,
)

if TYPE_CHECKING:
    from visioncreator.tool_servers.synthetic import ObserverSettings

__all__ = ["Connection", "ToolServerSpec", "is_closed", "is_outage", "open_connection"]

_log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 10.0
"""Longest wait for a session to shut down (a stdio server gets terminated, then killed)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolServerSpec:
    """How to reach a tool server: a command to spawn over stdio, or a URL.

    The default spawns the bundled synthetic server with this Python.
    """

    command: str = sys.executable
    """Executable to spawn for stdio (ignored when ``url`` is set)."""
    args: tuple[str, ...] = ("-m", "visioncreator.tool_servers")
    """Arguments of the spawned server."""
    env: Mapping[str, str] | None = None
    """Extra environment for the spawned server."""
    url: str | None = None
    """Streamable HTTP endpoint, e.g. ``http://127.0.0.1:8765/mcp``."""
    token: str | None = None
    """Bearer token for a server started with ``--token``."""
    max_event_bytes: int = 64 * 1024 * 1024
    """Largest server-sent event accepted over HTTP: an image read is one event (the SDK's default is 1 MiB)."""
    call_timeout_s: float = 120.0
    """Timeout of one tool call."""
    connect_timeout_s: float = 60.0
    """Timeout for starting or reaching the server."""
    outage_retries: int = 3
    """Quick retries of a request the HTTP server answered with an error status (5xx, unreachable)
    before the server counts as lost. A closed connection is not retried: only a reconnect helps."""
    outage_backoff_s: float = 0.25
    """First wait between those retries; doubled each time."""
    trusted: bool = False
    """Skip the MCP client's check of every tool result against the tool's output schema (about
    0.6 ms a call). Only for a server we start ourselves and whose results we trust (the bundled
    server: :meth:`synthetic` sets it); leave it off for any other server."""
    reconnects: int = 2
    """How often :class:`~visioncreator.graph.TaskRunner` reconnects (restarting a spawned server)
    and resumes a task after the server was lost, before the loss is raised to the caller."""

    @classmethod
    def synthetic(
        cls,
        *,
        store: str | os.PathLike[str],
        fault_rate: float = 0.0,
        tool_seed: int = 0,
        observer: ObserverSettings | None = None,
        extra_args: Sequence[str] = (),
    ) -> ToolServerSpec:
        """The bundled synthetic tool server over stdio, with its store at ``store`` (``trusted``).

        ``tool_seed`` is mixed into the server's layout, fault and observation draws (0: the call
        seeds alone decide). ``observer`` sets the error rates of its ``inspect_image``
        (``ObserverSettings.exact()`` for the ground truth); None keeps the server's defaults.
        """
        args: tuple[str, ...] = ("-m", "visioncreator.tool_servers", "--store", os.fspath(store))
        args += ("--fault-rate", str(fault_rate))
        if tool_seed:
            args += ("--tool-seed", str(tool_seed))
        if observer is not None:
            args += (
                *("--observe-miss-rate", repr(observer.miss_rate)),
                *("--observe-count-rate", repr(observer.count_rate)),
                *("--observe-color-rate", repr(observer.color_rate)),
                *("--observe-ocr-rate", repr(observer.ocr_rate)),
            )
        return cls(args=(*args, *extra_args), trusted=True)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` from a request means the server (or the way to it) is gone, not a tool error.

    Outages: the connection closed (a stdio server died), the HTTP server answered with an error
    status instead of JSON-RPC (5xx, an unreachable server: see :class:`_OutageTransport`), or it
    forgot the session (it restarted).
    """
    if isinstance(exc, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)):
        return True
    if not isinstance(exc, MCPError):
        return False
    code, message = error_code(exc), error_message(exc)
    if code == CONNECTION_CLOSED:
        return True
    if code == INTERNAL_ERROR and message.startswith("Server returned an error response"):
        return True
    return code == INVALID_REQUEST and message == "Session terminated"


def is_closed(exc: BaseException) -> bool:
    """Whether the session itself is dead (asking again on it cannot help; a reconnect can)."""
    if isinstance(exc, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)):
        return True
    return isinstance(exc, MCPError) and (
        error_code(exc) == CONNECTION_CLOSED
        or (error_code(exc) == INVALID_REQUEST and error_message(exc) == "Session terminated")
    )


@dataclass(kw_only=True)
class Connection:
    """A live session: the client, the tools the server listed, and the task holding it open."""

    client: Client
    listed: ListToolsResult
    generation: int
    """Counts the sessions a :class:`~visioncreator.graph.ToolClient` has opened (0: the first)."""
    _closing: asyncio.Event
    _holder: asyncio.Task[None]
    _transport: _OutageTransport | None = None

    def transport_failure(self) -> str | None:
        """The last HTTP transport error (refused, reset...) behind an error answer, if any."""
        return self._transport.last_failure if self._transport is not None else None

    async def close(self) -> None:
        """End the session (errors of a session that already died are logged, not raised)."""
        self._closing.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._holder), _CLOSE_TIMEOUT_S)
        if not self._holder.done():
            self._holder.cancel()
            with contextlib.suppress(BaseException):
                await self._holder


async def open_connection(spec: ToolServerSpec, server: Any, generation: int) -> Connection:
    """Open a session to ``server`` (in-process) or to what ``spec`` names; raise what went wrong.

    Raises:
        Exception: Whatever starting the server, connecting or listing its tools raised.
    """
    ready: asyncio.Future[tuple[Client, ListToolsResult]] = asyncio.get_running_loop().create_future()
    closing = asyncio.Event()
    transports: list[_OutageTransport] = []

    async def hold() -> None:
        try:
            async with AsyncExitStack() as stack:
                target = server if server is not None else await _target(spec, stack, transports)
                # The connect timeout is the client's own request timeout: it bounds the handshake.
                client = await stack.enter_async_context(Client(target, read_timeout_seconds=spec.connect_timeout_s))
                with anyio.fail_after(spec.connect_timeout_s):
                    listed = await client.list_tools()
                ready.set_result((client, listed))
                await closing.wait()
        except Exception as exc:
            if not ready.done():
                behind = transports[0].last_failure if transports else None
                # The SDK says only "Server returned an error response": name the refusal behind it.
                ready.set_exception(ConnectionError(f"{_innermost(exc)} ({behind})") if behind else exc)
            else:
                _log.debug("tool server session %d ended with %s: %s", generation, type(exc).__name__, exc)
        finally:
            if not ready.done():
                ready.cancel()

    holder = asyncio.create_task(hold(), name=f"visioncreator-tools-session-{generation}")
    try:
        client, listed = await ready
    except BaseException:
        closing.set()
        holder.cancel()
        with contextlib.suppress(BaseException):
            await holder
        raise
    return Connection(
        client=client, listed=listed, generation=generation, _closing=closing, _holder=holder,
        _transport=transports[0] if transports else None,
    )  # fmt: skip


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _target(spec: ToolServerSpec, stack: AsyncExitStack, transports: list[_OutageTransport]) -> Any:
    if not spec.url:
        # The SDK hands a child only HOME, PATH and the like: without PYTHONPATH a server spawned
        # from a source tree or an unpacked bundle (the GPU benchmark) cannot import this package.
        inherited = {key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}
        env = {**inherited, **spec.env} if spec.env else inherited or None
        return StdioServerParameters(command=spec.command, args=list(spec.args), env=env)
    headers = {"Authorization": f"Bearer {spec.token}"} if spec.token else None
    timeout = http.Timeout(spec.call_timeout_s, read=spec.call_timeout_s + 5.0)
    transport = _OutageTransport(http.AsyncHTTPTransport())
    transports.append(transport)
    client = await stack.enter_async_context(http.AsyncClient(headers=headers, timeout=timeout, transport=transport))
    return streamable_http(spec.url, client, spec.max_event_bytes)


class _OutageTransport(http.AsyncBaseTransport):
    """An httpx (httpx2 on mcp 2.x) transport that answers 503 where the real one raises (refused, reset, broken)."""

    def __init__(self, inner: http.AsyncBaseTransport) -> None:
        self._inner = inner
        self.last_failure: str | None = None
        """The last transport error turned into a 503 (None once a request got through again)."""

    async def handle_async_request(self, request: http.Request) -> http.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except http.TransportError as exc:
            self.last_failure = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            reason = self.last_failure.encode("utf-8", "replace")
            failed = http.Response(503, headers={"content-type": "text/plain"}, content=reason, request=request)
            return await readable_error_answer(request, failed)
        if request.method == "POST":
            self.last_failure = None
        return await readable_error_answer(request, response)

    async def aclose(self) -> None:
        await self._inner.aclose()
