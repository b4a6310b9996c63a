"""Serve the MCP tool server over streamable HTTP: loopback by default, bearer token off loopback."""

from __future__ import annotations

import json
import sys

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from visioncreator.tool_servers.bearer import BearerAuth
from visioncreator.tool_servers.connection import guarded_protocol
from visioncreator.tool_servers.guard import RequestGuard
from visioncreator.tool_servers.mcp_compat import MCPServer, TransportSecuritySettings, streamable_http_app
from visioncreator.tool_servers.readiness import Readiness
from visioncreator.tool_servers.rebinding import HostGuard
from visioncreator.tool_servers.settings import ServerSettings

__all__ = ["READY_PATH", "ReadyProbe", "serve_http"]

READY_PATH = "/ready"
"""The readiness probe: ``GET`` answers 200 with what is loaded once the server is ready, 503 before."""

# How often the start-up waits for uvicorn to bind: a short poll keeps it off the time to ready.
_START_POLL_S = 0.002
# How long a cancelled or failed server waits for uvicorn to close its sockets and connections.
_SHUTDOWN_S = 5

# The JSON-RPC envelope around the largest upload's base64.
_ENVELOPE_BYTES = 64 * 1024


def _max_body_bytes(settings: ServerSettings) -> int:
    """Largest request body the server reads: the largest upload in base64 (4/3 larger) plus its envelope."""
    return settings.max_input_bytes * 4 // 3 + _ENVELOPE_BYTES


class ReadyProbe:
    """ASGI middleware: ``GET /ready`` answers the server's readiness as JSON; the rest passes on.

    200 once the server serves calls without a model load on the way, 503 while it is still
    loading (or failed to load; ``error`` says why). It sits behind the Host/Origin check and the
    bearer token, like every other route: a probe sends the token where the server has one.

    Args:
        app: The application behind the probe.
        readiness: What the answer reports.
    """

    def __init__(self, app: ASGIApp, readiness: Readiness) -> None:
        self._app = app
        self._readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``/ready``; pass everything else on."""
        if scope["type"] != "http" or scope["path"] != READY_PATH:
            await self._app(scope, receive, send)
            return
        answer = self._readiness.snapshot()
        status = 200 if answer["ready"] else 503
        if scope["method"] not in ("GET", "HEAD"):
            status, answer = 405, {"error": f"{READY_PATH} answers GET only"}
        body = json.dumps(answer).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _http_app(server: MCPServer, settings: ServerSettings, readiness: Readiness) -> ASGIApp:
    """``server``'s streamable HTTP app behind the HTTP server's checks, outermost first.

    Host/Origin (DNS rebinding, 421/403), the bearer token when set (401), the readiness probe
    (``/ready``), then the request caps (429 per session, 413 size, 503 body budget, 408 body
    deadline, 409 duplicate JSON-RPC id).
    """
    app: ASGIApp = streamable_http_app(
        server,
        path=settings.path,
        host=settings.host,
        max_request_body_size=_max_body_bytes(settings),
        # HostGuard checks Host and Origin for every bind address, against the address each
        # connection arrived on; the SDK's own check (three loopback spellings only, any port)
        # would refuse the extra hosts configured, so it is off here rather than half on.
        security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    app = RequestGuard(
        app,
        max_body_bytes=_max_body_bytes(settings),
        body_timeout_s=settings.body_timeout_s,
        max_inflight_body_bytes=settings.max_inflight_body_bytes,
        max_session_requests=settings.max_session_requests,
    )
    app = ReadyProbe(app, readiness)
    if settings.bearer_token is not None:
        app = BearerAuth(app, settings.bearer_token)
    return HostGuard(
        app, bind_host=settings.host, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins
    )


async def serve_http(
    server: MCPServer, settings: ServerSettings, *, log_level: str = "warning", readiness: Readiness | None = None
) -> None:
    """Serve ``server`` over streamable HTTP until cancelled or signalled.

    Every cap is a ``settings`` field: connections served at once and the header deadline act per
    connection (``connection.py``); Host/Origin, the token and the request caps per request
    (``_http_app``). Prints ``visioncreator tool server listening on <url>`` to stderr once the
    socket accepts connections and the server is ready (with the real port when ``settings.port``
    is 0): when ``readiness`` has models to preload, the socket opens first (``/ready`` answers
    503), the models load in a worker thread, and the line comes after them.

    Args:
        server: The MCP server to serve.
        settings: Address, limits and token.
        log_level: uvicorn's log level.
        readiness: What ``/ready`` reports, and the preload to run; ready at once when omitted.
    """
    readiness = readiness or Readiness(None, backend_name=settings.backend, preload=False)
    import uvicorn

    protocol = guarded_protocol(max_connections=settings.max_connections, header_timeout_s=settings.header_timeout_s)
    config = uvicorn.Config(
        _http_app(server, settings, readiness),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        http=protocol,
        ws="none",
        timeout_graceful_shutdown=_SHUTDOWN_S,
    )
    http = uvicorn.Server(config)
    stopped = anyio.Event()
    serving = anyio.CancelScope(shield=True)

    async def _serve() -> None:
        # Shielded: a cancelled caller asks uvicorn to exit (below), so that it closes its
        # listening socket and connections instead of abandoning them.
        try:
            with serving:
                await http.serve()
        finally:
            stopped.set()

    async with anyio.create_task_group() as group:
        group.start_soon(_serve)
        try:
            while not http.started:
                if stopped.is_set():
                    raise RuntimeError(f"could not serve on {settings.url}: see the log above")
                await anyio.sleep(_START_POLL_S)
            port = http.servers[0].sockets[0].getsockname()[1]
            url = settings.model_copy(update={"port": port}).url
            if not readiness.ready:
                print(f"visioncreator tool server loading models; {url} answers /ready", file=sys.stderr, flush=True)
                try:
                    await anyio.to_thread.run_sync(readiness.preload)
                except Exception as exc:
                    raise RuntimeError(f"could not load the models: {exc}") from exc
            print(f"visioncreator tool server listening on {url}", file=sys.stderr, flush=True)
            await stopped.wait()
        finally:
            http.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(_SHUTDOWN_S + 1.0):
                await stopped.wait()
            serving.cancel()  # still running past the grace: stop waiting for it
