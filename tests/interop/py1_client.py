"""Drive the visioncreator tool server with MCP clients on the Python SDK's 1.x line.

Runs in its own virtual environment (``.venv-mcp1``, made by ``.ci/interop-setup.sh``), because
``langchain-mcp-adapters`` requires ``mcp<2`` and the project itself requires ``mcp>=2``::

    python py1_client.py stdio <command> [args...]   spawn the server over stdio
    python py1_client.py http <url> [token]          connect over streamable HTTP

With the plain ``ClientSession`` it lists the tools, makes a 256x256 image, reads
``image://{handle}`` back and inspects it; then it loads the tools through
``langchain_mcp_adapters.MultiServerMCPClient`` and makes the same image with the LangChain
tool. It prints one JSON line of what it saw; ``test_interop.py`` asserts on that line.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import anyio
import httpx
from langchain_core.messages import ToolMessage
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.sessions import Connection, StdioConnection, StreamableHttpConnection
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import BlobResourceContents, ResourceLink
from pydantic import AnyUrl

# The whole run must end inside the pytest-side limit, so a hang reports here first.
RUN_TIMEOUT_S = 25.0
REQUEST_TIMEOUT_S = 15.0
PROMPT = "three red apples on a white table"
MAKE = {"prompt": PROMPT, "width": 256, "height": 256, "seed": 1}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    # The PNG header: 8-byte signature, then the IHDR chunk (length, b"IHDR", width, height).
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG with an IHDR chunk first")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@asynccontextmanager
async def _session(argv: list[str]) -> AsyncIterator[ClientSession]:
    mode, target, *rest = argv
    if mode == "stdio":
        # The whole environment (the SDK passes only a few variables by default): the server runs
        # the code under test (PYTHONPATH) rather than whatever is installed.
        params = StdioServerParameters(command=target, args=rest, env=dict(os.environ))
        async with stdio_client(params, errlog=sys.stderr) as (read, write), ClientSession(read, write) as session:
            yield session
    else:
        headers = {"Authorization": f"Bearer {rest[0]}"} if rest else {}
        async with (
            httpx.AsyncClient(headers=headers, timeout=REQUEST_TIMEOUT_S) as http,
            streamable_http_client(target, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            yield session


def _connection(argv: list[str]) -> Connection:
    """The ``MultiServerMCPClient`` connection entry for the same server."""
    mode, target, *rest = argv
    if mode == "stdio":
        return StdioConnection(transport="stdio", command=target, args=rest, env=dict(os.environ))
    headers = {"Authorization": f"Bearer {rest[0]}"} if rest else None
    return StreamableHttpConnection(transport="streamable_http", url=target, headers=headers, timeout=REQUEST_TIMEOUT_S)


async def _plain(argv: list[str]) -> dict[str, Any]:
    async with _session(argv) as session:
        init = await session.initialize()
        tools = (await session.list_tools()).tools
        made = await session.call_tool("text_to_image", MAKE)
        if made.isError or made.structuredContent is None:
            raise RuntimeError(f"text_to_image failed: {made.content}")
        handle = made.structuredContent["handle"]
        resource = (await session.read_resource(AnyUrl(f"image://{handle}"))).contents[0]
        if not isinstance(resource, BlobResourceContents):
            raise RuntimeError(f"image://{handle} is not a blob: {resource}")
        png = base64.b64decode(resource.blob)
        width, height = _png_size(png)
        inspected = await session.call_tool("inspect_image", {"image": handle, "questions": ["how many apples?"]})
        if inspected.isError:
            raise RuntimeError(f"inspect_image failed: {inspected.content}")
    return {
        "protocol_version": str(init.protocolVersion),
        "server": init.serverInfo.name,
        "server_version": init.serverInfo.version,
        "tools": [tool.name for tool in tools],
        "output_schemas": [tool.name for tool in tools if tool.outputSchema],
        "made": made.structuredContent,
        "made_links": [
            {"uri": str(block.uri), "name": block.name, "mime_type": block.mimeType}
            for block in made.content
            if isinstance(block, ResourceLink)
        ],
        "resource": {
            "uri": str(resource.uri),
            "mime_type": resource.mimeType,
            "bytes": len(png),
            "width": width,
            "height": height,
        },
        "inspected": inspected.structuredContent,
    }


async def _langchain(argv: list[str]) -> dict[str, Any]:
    client = MultiServerMCPClient({"visioncreator": _connection(argv)})
    tools = {tool.name: tool for tool in await client.get_tools()}
    call = {"type": "tool_call", "id": "call-1", "name": "text_to_image", "args": MAKE}
    message = await tools["text_to_image"].ainvoke(call)
    if not isinstance(message, ToolMessage) or message.status != "success":
        raise RuntimeError(f"text_to_image through LangChain failed: {message}")
    artifact = message.artifact or {}
    return {
        "tools": sorted(tools),
        "made": artifact.get("structured_content"),
        "content": message.content,
    }


async def _main(argv: list[str]) -> None:
    with anyio.fail_after(RUN_TIMEOUT_S):
        line = {
            "client": "mcp",
            "client_version": version("mcp"),
            "adapters_version": version("langchain-mcp-adapters"),
            **await _plain(argv),
            "langchain": await _langchain(argv),
        }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("stdio", "http"):
        sys.exit("usage: py1_client.py stdio <command> [args...] | http <url> [token]")
    anyio.run(_main, sys.argv[1:])
