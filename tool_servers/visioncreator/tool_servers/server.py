"""The visioncreator MCP tool server: five image tools over an ``ImageBackend`` and an ``ImageStore``.

Design choices:

- Tool parameters are exactly the fields of the input models in ``schemas.py`` (same annotated
  types), and each call is validated once more with that model, so the JSON schema a client
  sees and the contract the back end gets cannot drift apart.
- Every failure a caller can cause becomes a ``ToolError`` whose message says what was wrong
  and what to do; an unexpected back-end exception becomes a short ``ToolError`` too, so the
  server never crashes on a call.
- Admission control: at most ``max_concurrency`` calls run and ``max_queue`` wait; a call beyond
  that is refused at once (before any await) with a tool error naming ``max_queue``, so a flood
  of calls gets fast answers instead of piling up work that would time out anyway.
- The back end is awaited directly: the synthetic back end renders in milliseconds, and a
  heavy back end (diffusers) owns its own thread or process offloading. The store's PNG
  encode, decode and file I/O run in a worker thread (``anyio.to_thread``) because they grow
  with image size and would otherwise stall other sessions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from visioncreator.tool_servers.backend import ImageBackend
from visioncreator.tool_servers.errors import (
    UnknownHandleError,
)
from visioncreator.tool_servers.mcp_compat import MCPServer, ResourceNotFoundError
from visioncreator.tool_servers.names import SERVER_NAME
from visioncreator.tool_servers.registration import register_tools
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.tools import ToolRunner, default_backend

__all__ = ["SERVER_NAME", "build_server"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def build_server(
    settings: ServerSettings, backend: ImageBackend | None = None, store: ImageStore | None = None
) -> MCPServer:
    """Build the MCP server with the five image tools and the ``image://`` and ``truth://`` resources.

    Args:
        settings: Limits, store location and back-end choice.
        backend: The image back end; the one ``settings.backend`` names when omitted.
        store: The image store; one at ``settings.store_root`` when omitted.

    Returns:
        A ready ``MCPServer``; run it with ``run_stdio_async`` or serve ``streamable_http_app``.

    """
    store = store or ImageStore(
        settings.store_root,
        max_input_bytes=settings.max_input_bytes,
        max_decoded_pixels=settings.max_decoded_pixels,
        allowed_formats=settings.allowed_input_formats,
        cache_pixels=settings.store_cache_pixels,
        max_pending_writes=settings.max_pending_writes,
    )
    tools = ToolRunner(settings, backend or default_backend(settings), store)
    server = MCPServer(
        SERVER_NAME,
        instructions=(
            "Image tools. Images are named by handles ('img_' + 24 hex digits) that tools return; pass "
            "handles, never file paths or bytes. Read image://{handle} for the PNG and truth://{handle} for "
            "the synthetic ground truth."
        ),
    )
    register_tools(server, tools)
    _register_resources(server, tools)
    return server


async def _read(tools: ToolRunner, read: Callable[[str], _T], handle: str) -> _T:
    """``read(handle)`` off the event loop; a lost image with a journal recipe is made again first."""
    try:
        return await anyio.to_thread.run_sync(read, handle)
    except UnknownHandleError as exc:
        if not await tools.recover(handle):
            raise ResourceNotFoundError(str(exc)) from exc
    try:
        return await anyio.to_thread.run_sync(read, handle)
    except UnknownHandleError as exc:
        raise ResourceNotFoundError(str(exc)) from exc


def _register_resources(server: MCPServer, tools: ToolRunner) -> None:
    store = tools.store

    @server.resource("image://{handle}", mime_type="image/png", description="The PNG file of an image handle.")
    async def image_resource(handle: str) -> bytes:
        return await _read(tools, store.read_bytes, handle)

    @server.resource(
        "truth://{handle}",
        mime_type="application/json",
        description="The synthetic ground truth of an image handle as JSON; null when it has none.",
    )
    async def truth_resource(handle: str) -> str:
        truth = await _read(tools, store.truth, handle)
        return "null" if truth is None else truth.model_dump_json()
