"""The MCP SDK's server side on either major: mcp 2.x (``MCPServer``) or mcp 1.x (``FastMCP``).

LangChain's MCP adapters (``langchain-mcp-adapters`` 0.3) need ``mcp<2``: a LangGraph app that loads
MCP tools through them can install this package only if it runs on mcp 1.x too. The two majors
differ in names (``MCPServer``/``FastMCP``, ``mcpserver``/``fastmcp``), in the Python names of the
protocol's fields (snake_case in 2.x, the wire's camelCase in 1.x), in how a request's ``_meta``
arrives (a dict, a pydantic model) and in how the HTTP app is configured (arguments, settings).
Everything else in this package imports the SDK's server names from here and builds protocol
objects with :func:`mcp_model`, so both majors run the same code.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, TypeVar

from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    ContentBlock,
    ErrorData,
    ImageContent,
    ListResourcesResult,
    Resource,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel

MCP_MAJOR = int(version("mcp").split(".", 1)[0])
"""The installed MCP SDK's major version (1 or 2)."""

if TYPE_CHECKING or MCP_MAJOR >= 2:
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
    from mcp.server.mcpserver.tools import Tool
    from mcp.shared.exceptions import MCPError
else:  # pragma: no cover - runs only where mcp 1.x is installed
    from mcp.server.fastmcp import Context
    from mcp.server.fastmcp import FastMCP as MCPServer
    from mcp.server.fastmcp.exceptions import ResourceError as ResourceNotFoundError
    from mcp.server.fastmcp.exceptions import ToolError
    from mcp.server.fastmcp.tools import Tool
    from mcp.shared.exceptions import McpError as MCPError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = [
    "MCP_MAJOR",
    "CallToolResult",
    "ContentBlock",
    "Context",
    "ImageContent",
    "ListResourcesResult",
    "MCPServer",
    "Resource",
    "ResourceLink",
    "ResourceNotFoundError",
    "TextContent",
    "Tool",
    "ToolAnnotations",
    "ToolError",
    "TransportSecuritySettings",
    "invalid_params",
    "mcp_model",
    "replace_listings",
    "request_meta",
    "server_arguments",
    "set_version",
    "streamable_http_app",
]

_ModelT = TypeVar("_ModelT", bound=BaseModel)
_SNAKE = re.compile(r"_([a-z])")


def _wire_name(name: str) -> str:
    """A field's name on the wire: ``meta`` is ``_meta``, the rest camelCase (``mime_type`` -> ``mimeType``)."""
    return "_meta" if name == "meta" else _SNAKE.sub(lambda m: m.group(1).upper(), name)


def mcp_model(cls: type[_ModelT], /, **fields: Any) -> _ModelT:
    """An MCP protocol object from snake_case field names, on either SDK major.

    mcp 2.x names fields in snake_case (``structured_content``) and accepts the wire names too;
    mcp 1.x names them as the wire does (``structuredContent``) and keeps any unknown keyword as
    an extra field, so ``CallToolResult(structured_content=...)`` there would send a field no
    client reads. Validating the wire names is right on both.

    Args:
        cls: The protocol type, e.g. ``CallToolResult``, ``ImageContent``, ``ToolAnnotations``.
        **fields: Its fields by their 2.x (snake_case) names; ``meta`` is ``_meta``.

    Returns:
        The validated object.
    """
    return cls.model_validate({_wire_name(key): value for key, value in fields.items()})


def request_meta(ctx: Context | None) -> Mapping[str, Any]:
    """The ``_meta`` of the request a tool is answering, as a mapping (empty when none).

    mcp 2.x hands it over as a dict; mcp 1.x as a pydantic model whose unknown keys are extras.
    """
    meta: Any = ctx.request_context.meta if ctx is not None else None
    if meta is None:
        return {}
    if isinstance(meta, Mapping):
        return meta
    if isinstance(meta, BaseModel):
        return meta.model_dump(by_alias=True, exclude_none=True)
    return {}  # pragma: no cover - neither major sends anything else


def streamable_http_app(
    server: MCPServer, *, path: str, host: str, max_request_body_size: int, security: TransportSecuritySettings
) -> ASGIApp:
    """``server``'s streamable HTTP ASGI app at ``path``, with the SDK's body cap and transport checks.

    mcp 2.x takes these as arguments; mcp 1.x reads them from the server's settings, and before
    1.29 has no body cap of its own (``RequestGuard`` in ``http.py`` caps bodies on every version).
    """
    if MCP_MAJOR >= 2:
        return server.streamable_http_app(
            streamable_http_path=path,
            host=host,
            max_request_body_size=max_request_body_size,
            transport_security=security,
        )
    settings: Any = getattr(server, "settings")  # noqa: B009 - mcp 1.x only: not in 2.x's type
    settings.streamable_http_path = path
    settings.host = host
    if "max_request_body_size" in type(settings).model_fields:  # mcp >= 1.29; older ones read any size
        settings.max_request_body_size = max_request_body_size
    settings.transport_security = security
    app: ASGIApp = server.streamable_http_app()  # type: ignore[call-arg,unused-ignore]
    return app


def server_arguments(
    *, name: str, title: str, version: str, instructions: str, tools: list[Tool], lifespan: Any
) -> dict[str, Any]:
    """The keyword arguments of ``MCPServer(...)`` on the installed major.

    mcp 1.x's ``FastMCP`` takes no ``title`` or ``version``: :func:`set_version` gives the version there.
    """
    arguments: dict[str, Any] = {"name": name, "instructions": instructions, "tools": tools, "lifespan": lifespan}
    if MCP_MAJOR >= 2:
        arguments.update(title=title, version=version)
    return arguments


def set_version(server: MCPServer, version: str) -> None:
    """Make ``initialize`` report ``version`` (mcp 1.x only: 2.x takes it as an argument)."""
    if MCP_MAJOR < 2:  # pragma: no cover - runs only where mcp 1.x is installed
        lowlevel: Any = getattr(server, "_mcp_server")  # noqa: B009 - mcp 1.x only: not in 2.x's type
        lowlevel.version = version


def invalid_params(message: str) -> Exception:
    """The protocol error a request with an invalid parameter gets (``INVALID_PARAMS``)."""
    if MCP_MAJOR >= 2:
        return MCPError(INVALID_PARAMS, message)
    error_type: Any = MCPError  # mcp 1.x's McpError takes the ErrorData  # pragma: no cover
    return error_type(ErrorData(code=INVALID_PARAMS, message=message))  # type: ignore[no-any-return]  # pragma: no cover


ListPage = Callable[[str | None], Awaitable[ListResourcesResult]]
"""A paged ``resources/list``: the request's cursor in, one page out."""


def replace_listings(server: MCPServer, list_page: ListPage) -> None:
    """Serve ``resources/list`` with ``list_page`` (its cursor honoured) and serve no prompts at all.

    Neither SDK has a public hook for either: the high-level server lists resources without a
    cursor and always registers the prompt handlers, and the capabilities follow the handlers. So
    the low-level server's handlers are replaced and removed here (``test_protocol.py`` pins the
    result: a paged listing, and no prompts capability).
    """
    if MCP_MAJOR >= 2:
        from mcp.types import PaginatedRequestParams

        async def handler(ctx: Any, params: PaginatedRequestParams) -> ListResourcesResult:
            return await list_page(params.cursor)

        lowlevel: Any = server._lowlevel_server
        lowlevel.add_request_handler("resources/list", PaginatedRequestParams, handler)
        for method in ("prompts/list", "prompts/get"):
            lowlevel._request_handlers.pop(method, None)
        return
    from mcp import types  # pragma: no cover - runs only where mcp 1.x is installed

    async def handler_1(request: Any) -> Any:  # pragma: no cover
        params = request.params
        server_result: Any = types.ServerResult  # pragma: no cover
        return server_result(await list_page(params.cursor if params is not None else None))

    handlers: Any = server._mcp_server.request_handlers  # type: ignore[attr-defined,unused-ignore]  # pragma: no cover
    handlers[types.ListResourcesRequest] = handler_1  # pragma: no cover
    for request_type in (types.ListPromptsRequest, types.GetPromptRequest):  # pragma: no cover
        handlers.pop(request_type, None)
