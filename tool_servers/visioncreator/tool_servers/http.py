"""Serve the MCP tool server over streamable HTTP: loopback by default, bearer token off loopback."""

from __future__ import annotations

import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from visioncreator.tool_servers.bearer import BearerAuth
from visioncreator.tool_servers.connection import guarded_protocol
from visioncreator.tool_servers.guard import RequestGuard
from visioncreator.tool_servers.rebinding import HostGuard
from visioncreator.tool_servers.settings import ServerSettings

__all__ = ["serve_http"]

# The JSON-RPC envelope around the largest upload's base64.
_ENVELOPE_BYTES = 64 * 1024


def _max_body_bytes(settings: ServerSettings) -> int:
    """Largest request body the server reads: the largest upload in base64 (4/3 larger) plus its envelope."""
    return settings.max_input_bytes * 4 // 3 + _ENVELOPE_BYTES


def _http_app(server: MCPServer, settings: ServerSettings) -> ASGIApp:
    """``server``'s streamable HTTP app behind the HTTP server's checks, outermost first.

    Host/Origin (DNS rebinding, 421/403), the bearer token when set (401), then the request caps
    (429 per session, 413 size, 503 body budget, 408 body deadline, 409 duplicate JSON-RPC id).
    """
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=settings.path,
        host=settings.host,
        max_request_body_size=_max_body_bytes(settings),
        # HostGuard checks Host and Origin for every bind address, against the address each
        # connection arrived on; the SDK's own check (three loopback spellings only, any port)
        # would refuse the extra hosts configured, so it is off here rather than half on.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    app = RequestGuard(
        app,
        max_body_bytes=_max_body_bytes(settings),
        body_timeout_s=settings.body_timeout_s,
        max_inflight_body_bytes=settings.max_inflight_body_bytes,
        max_session_requests=settings.max_session_requests,
    )
    if settings.bearer_token is not None:
        app = BearerAuth(app, settings.bearer_token)
    return HostGuard(
        app, bind_host=settings.host, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins
    )


async def serve_http(server: MCPServer, settings: ServerSettings, *, log_level: str = "warning") -> None:
    """Serve ``server`` over streamable HTTP until cancelled or signalled.

    Every cap is a ``settings`` field: connections served at once and the header deadline act per
    connection (``connection.py``); Host/Origin, the token and the request caps per request
    (``_http_app``). Prints ``visioncreator tool server listening on <url>`` to stderr once the
    socket accepts connections (with the real port when ``settings.port`` is 0).
    """
    import uvicorn

    protocol = guarded_protocol(max_connections=settings.max_connections, header_timeout_s=settings.header_timeout_s)
    config = uvicorn.Config(
        _http_app(server, settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        http=protocol,
        ws="none",
    )
    http = uvicorn.Server(config)
    stopped = anyio.Event()

    async def _serve() -> None:
        try:
            await http.serve()
        finally:
            stopped.set()

    async with anyio.create_task_group() as group:
        group.start_soon(_serve)
        while not http.started:
            if stopped.is_set():
                raise RuntimeError(f"could not serve on {settings.url}: see the log above")
            await anyio.sleep(0.02)
        port = http.servers[0].sockets[0].getsockname()[1]
        url = settings.model_copy(update={"port": port}).url
        print(f"visioncreator tool server listening on {url}", file=sys.stderr, flush=True)
