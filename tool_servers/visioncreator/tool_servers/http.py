"""Serve the MCP tool server over streamable HTTP: loopback by default, bearer token off loopback."""

from __future__ import annotations

import hmac
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from visioncreator.tool_servers.settings import ServerSettings

__all__ = ["serve_http"]


class _BearerAuth:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer <token>`` get 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            # Constant-time comparison: the token must not leak through response timing.
            if not hmac.compare_digest(given, self._expected):
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": b'{"error": "missing or wrong bearer token"}'})
                return
        await self._app(scope, receive, send)


async def serve_http(server: MCPServer, settings: ServerSettings, *, log_level: str = "warning") -> None:
    """Serve ``server`` over streamable HTTP until cancelled or signalled.

    The SDK's Host/Origin (DNS-rebinding) protection stays on for loopback hosts. Prints
    ``visioncreator tool server listening on <url>`` to stderr once the socket accepts connections
    (with the real port when ``settings.port`` is 0).
    """
    import uvicorn

    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=settings.path,
        host=settings.host,
        # Room for the largest upload: base64 grows it by 4/3, plus the JSON-RPC envelope.
        max_request_body_size=settings.max_input_bytes * 4 // 3 + 64 * 1024,
    )
    if settings.bearer_token is not None:
        app = _BearerAuth(app, settings.bearer_token)
    http = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level))
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
