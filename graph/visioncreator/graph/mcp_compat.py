"""The MCP SDK's client side on either major: mcp 2.x (``mcp.Client``) or mcp 1.x (``ClientSession``).

LangChain's MCP adapters (``langchain-mcp-adapters`` 0.3) need ``mcp<2``; a LangGraph app that
loads MCP tools through them installs this package beside mcp 1.x. The graph's client code
(``client.py``, ``connection.py``) is written against mcp 2.x's ``Client`` and imports the SDK
through this module, which on mcp 1.x supplies a :class:`Client` of the same shape over 1.x's
``ClientSession`` and accessors for what the majors spell differently: error codes
(``MCPError.code`` / ``McpError.error.code``), the Python names of protocol fields (snake_case /
camelCase), the HTTP library (httpx2 / httpx) and the streamable HTTP transport's arguments.
"""

from __future__ import annotations

import importlib
import json
import re
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import timedelta
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from mcp import StdioServerParameters
from mcp.types import INTERNAL_ERROR, INVALID_REQUEST, CallToolRequest, CallToolRequestParams, CallToolResult

MCP_MAJOR = int(version("mcp").split(".", 1)[0])
"""The installed MCP SDK's major version (1 or 2)."""

if TYPE_CHECKING or MCP_MAJOR >= 2:
    import httpx2 as http
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError
else:  # pragma: no cover - runs only where mcp 1.x is installed
    import httpx as http
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import McpError as MCPError

__all__ = [
    "MCP_MAJOR",
    "Client",
    "MCPError",
    "call_tool_unchecked",
    "error_code",
    "error_message",
    "http",
    "model_field",
    "readable_error_answer",
    "streamable_http",
]

_SNAKE = re.compile(r"_([a-z])")


def error_code(exc: MCPError) -> int:
    """The JSON-RPC error code of an SDK error."""
    if MCP_MAJOR >= 2:
        return exc.code
    code = int(getattr(exc, "error").code)  # noqa: B009 - mcp 1.x only: not in 2.x's type
    # mcp 1.x's streamable HTTP client reports a terminated session (HTTP 404) as +32600.
    return INVALID_REQUEST if code == -INVALID_REQUEST else code


def error_message(exc: MCPError) -> str:
    """The JSON-RPC error message of an SDK error."""
    if MCP_MAJOR >= 2:
        return exc.message
    return str(getattr(exc, "error").message)  # noqa: B009 - mcp 1.x only: not in 2.x's type


def model_field(obj: Any, name: str) -> Any:
    """A protocol object's field by its 2.x (snake_case) name, on either major (1.x: camelCase)."""
    if MCP_MAJOR >= 2:
        return getattr(obj, name)
    return getattr(obj, _SNAKE.sub(lambda m: m.group(1).upper(), name))


def streamable_http(url: str, http_client: http.AsyncClient, max_event_bytes: int) -> Any:
    """The streamable HTTP transport to ``url`` over ``http_client``, for :class:`Client`.

    ``max_event_bytes`` caps one server-sent event on mcp 2.x (1 MiB by default there); mcp 1.x
    has no such cap.
    """
    if MCP_MAJOR >= 2:
        return streamable_http_client(url, http_client=http_client, max_sse_event_size=max_event_bytes)
    return streamable_http_client(url, http_client=http_client)  # pragma: no cover - mcp 1.x


async def call_tool_unchecked(client: Client, name: str, arguments: dict[str, Any], meta: Any) -> CallToolResult:
    """Call a tool without the SDK's check of the result against the tool's output schema."""
    params = CallToolRequestParams.model_validate({"name": name, "arguments": arguments, "_meta": meta})
    request: Any = CallToolRequest(params=params)
    if MCP_MAJOR < 2:  # pragma: no cover - mcp 1.x: requests go wrapped in the ClientRequest union
        request = importlib.import_module("mcp.types").ClientRequest(request)
    result: CallToolResult = await client.session.send_request(request, CallToolResult)
    return result


_FAILED = "Server returned an error response"
"""What mcp 2.x's client says for an HTTP error answer without a JSON-RPC error in it."""


async def readable_error_answer(request: http.Request, response: http.Response) -> http.Response:
    """An HTTP error answer to a JSON-RPC POST, made into what mcp 2.x's client turns it into.

    mcp 2.x's streamable HTTP client answers a request that got an HTTP error status (other than
    404) with a JSON-RPC error: the body's, or ``INTERNAL_ERROR`` "Server returned an error
    response". mcp 1.x's raises in its transport task instead, which ends the session and every
    call in flight. On mcp 1.x this rewrites such an answer as the 2.x client would read it (a
    ``200`` with the JSON-RPC error; a ``202`` for a notification), so an outage is classified and
    retried the same way on both; on 2.x, and for any other answer, ``response`` is returned as is.
    """
    if MCP_MAJOR >= 2 or request.method != "POST" or response.status_code < 400 or response.status_code == 404:
        return response
    try:  # pragma: no cover - mcp 1.x
        sent = json.loads(request.content)
    except (ValueError, http.RequestNotRead):  # pragma: no cover - mcp 1.x: not a JSON-RPC message
        return response
    if not isinstance(sent, dict) or "id" not in sent:  # pragma: no cover - mcp 1.x: a notification
        await response.aclose()
        return http.Response(202, request=request)
    body = await response.aread()  # pragma: no cover - mcp 1.x
    try:  # pragma: no cover - mcp 1.x
        error = json.loads(body)["error"]
        error = {"code": int(error["code"]), "message": str(error["message"])}
    except (ValueError, KeyError, TypeError):  # pragma: no cover - mcp 1.x
        error = {"code": INTERNAL_ERROR, "message": _FAILED}
    answer = {"jsonrpc": "2.0", "id": sent["id"], "error": error}  # pragma: no cover - mcp 1.x
    return http.Response(200, json=answer, request=request)  # pragma: no cover - mcp 1.x


class _Client1:  # pragma: no cover - runs only where mcp 1.x is installed
    """mcp 2.x's ``Client``, as much of it as the graph uses, over mcp 1.x's ``ClientSession``.

    ``target`` is what 2.x's ``Client`` takes: an in-process server (``FastMCP``), stdio
    parameters, or a transport (an async context manager yielding the read and write streams).
    """

    def __init__(self, target: Any, *, read_timeout_seconds: float | None = None) -> None:
        self._target = target
        self._timeout = timedelta(seconds=read_timeout_seconds) if read_timeout_seconds is not None else None
        self._stack: AsyncExitStack | None = None
        self._session: Any = None
        self.server_info: Any = None

    @property
    def session(self) -> Any:
        """The live ``ClientSession``."""
        if self._session is None:
            raise RuntimeError("the client is not connected: use it as `async with Client(...)`")
        return self._session

    async def __aenter__(self) -> _Client1:
        session_module = importlib.import_module("mcp.client.session")
        async with AsyncExitStack() as stack:
            read, write = await self._streams(stack)
            session = await stack.enter_async_context(
                session_module.ClientSession(read, write, read_timeout_seconds=self._timeout)
            )
            initialized = await session.initialize()
            self.server_info = initialized.serverInfo
            self._session, self._stack = session, stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # The session stays: a request on it after this raises the SDK's closed-stream error, which
        # the graph reads as a lost server (mcp 2.x's Client behaves the same).
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _streams(self, stack: AsyncExitStack) -> tuple[Any, Any]:
        target = self._target
        if isinstance(target, StdioServerParameters):
            stdio = importlib.import_module("mcp.client.stdio")
            read, write = await stack.enter_async_context(stdio.stdio_client(target))
            return read, write
        lowlevel = getattr(target, "_mcp_server", None)
        if lowlevel is not None:
            return await self._in_process(lowlevel, stack)
        transport: AbstractAsyncContextManager[tuple[Any, ...]] = target
        streams = await stack.enter_async_context(transport)
        return streams[0], streams[1]

    @staticmethod
    async def _in_process(server: Any, stack: AsyncExitStack) -> tuple[Any, Any]:
        anyio = importlib.import_module("anyio")
        memory = importlib.import_module("mcp.shared.memory")
        client_streams, server_streams = await stack.enter_async_context(memory.create_client_server_memory_streams())
        group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)

        async def serve() -> None:
            await server.run(*server_streams, server.create_initialization_options())

        group.start_soon(serve)
        return client_streams[0], client_streams[1]

    async def list_tools(self) -> Any:
        """The server's tools (the first page)."""
        return await self.session.list_tools()

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *, meta: Any = None) -> Any:
        """Call a tool; the SDK checks a result against the tool's output schema."""
        return await self.session.call_tool(name, arguments, meta=meta)

    async def read_resource(self, uri: str) -> Any:
        """Read a resource."""
        return await self.session.read_resource(uri)


if not TYPE_CHECKING and MCP_MAJOR < 2:  # pragma: no cover - mcp 1.x
    Client = _Client1
