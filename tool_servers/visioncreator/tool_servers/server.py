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
- The protocol surface is complete and honest: the server names its package version;
  ``resources/list`` pages through the store's images (``resource_page_size`` a page, the last
  handle as the cursor); ``prompts`` is not advertised, as the server has none; an unknown
  argument is refused by name (the input schemas say ``additionalProperties: false``), and a value
  outside a field's limits is refused in a sentence that names the field and the limit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from pydantic import ValidationError

from visioncreator.tool_servers.arguments import describe_invalid, unknown_arguments
from visioncreator.tool_servers.backend import ImageBackend
from visioncreator.tool_servers.errors import UnknownHandleError
from visioncreator.tool_servers.listing import list_images
from visioncreator.tool_servers.mcp_compat import (
    Context,
    ListResourcesResult,
    MCPServer,
    Resource,
    ResourceNotFoundError,
    Tool,
    ToolError,
    invalid_params,
    mcp_model,
    replace_listings,
    server_arguments,
    set_version,
)
from visioncreator.tool_servers.names import SERVER_NAME
from visioncreator.tool_servers.registration import image_tools
from visioncreator.tool_servers.schemas import HANDLE_PATTERN
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.tools import ToolRunner, default_backend

__all__ = ["SERVER_NAME", "build_server"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_DISTRIBUTION = "visioncreator"
_INSTRUCTIONS = (
    "Image tools. Images are named by handles ('img_' + 24 hex digits) that tools return; pass handles, never "
    "file paths or bytes. Read image://{handle} for the PNG and truth://{handle} for the synthetic ground truth."
)


def _server_version() -> str:
    """The installed ``visioncreator`` package's version, which the server gives in ``initialize``."""
    try:
        return version(_DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


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
    server = _ToolServer(tools, image_tools(tools))
    _register_resources(server, tools)
    return server


class _ToolServer(MCPServer):
    """``MCPServer`` with our argument checks, a paged ``resources/list`` and no ``prompts``.

    The SDK accepts unknown arguments silently and words a validation error as pydantic's text
    with a documentation link: :meth:`call_tool` refuses the first by name and rewrites the second.
    """

    def __init__(self, runner: ToolRunner, tools: list[Tool]) -> None:
        version = _server_version()
        super().__init__(
            **server_arguments(
                name=SERVER_NAME, title="VisionCreator image tools", version=version, instructions=_INSTRUCTIONS,
                tools=tools, lifespan=_settling,
            )
        )  # fmt: skip
        set_version(self, version)
        self._runner = runner
        self._arguments = {tool.name: tuple(tool.parameters.get("properties", {})) for tool in tools}
        replace_listings(self, self._list_images)

    async def call_tool(self, name: str, arguments: dict[str, Any], *context: Context[Any, Any] | None) -> Any:
        """Call a tool; unknown or invalid arguments are refused in plain sentences (a tool error).

        ``context``: mcp 2.x passes the request's context along, mcp 1.x does not.
        """
        known = self._arguments.get(name)
        if known is not None and (refusal := unknown_arguments(name, arguments, known)) is not None:
            raise ToolError(refusal)
        try:
            return await super().call_tool(name, arguments, *context)
        except ToolError as exc:
            # The SDK's own argument check: the cause is pydantic's error, reworded here.
            if known is not None and isinstance(exc.__cause__, ValidationError):
                raise ToolError(describe_invalid(name, exc.__cause__)) from exc.__cause__
            raise

    async def _list_images(self, cursor: str | None) -> ListResourcesResult:
        if cursor is not None and not _is_handle(cursor):
            raise invalid_params("invalid cursor: pass the nextCursor of the previous resources/list page")
        page_size = self._runner.settings.resource_page_size
        page, more = await anyio.to_thread.run_sync(list_images, self._runner.store.root, cursor, page_size)
        resources = [
            mcp_model(
                Resource, uri=f"image://{image.handle}", name=image.handle, mime_type="image/png", size=image.bytes
            )
            for image in page
        ]
        return mcp_model(ListResourcesResult, resources=resources, next_cursor=page[-1].handle if more else None)


@asynccontextmanager
async def _settling(server: Any) -> AsyncIterator[None]:
    """The server's lifespan (per session): when it ends, its images written behind are on disk.

    An in-process server (``Client(server)``, the RL collector's) otherwise could leave writes
    in flight past its session, into a store its owner is already removing.
    """
    try:
        yield None
    finally:
        await anyio.to_thread.run_sync(server._runner.settle)


def _is_handle(text: str) -> bool:
    return re.fullmatch(HANDLE_PATTERN, text) is not None


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
