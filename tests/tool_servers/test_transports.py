"""The server as MCP clients meet it: a real subprocess over stdio and over streamable HTTP."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import BlobResourceContents

from visioncreator.tool_servers.decode import decode_image

TOKEN = "test-token-0123456789abcdef"
STARTUP_S = 30.0


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "VISIONCREATOR_STORE": str(store), "PYTHONUNBUFFERED": "1"}


async def _make_and_read_back(session: ClientSession) -> None:
    with anyio.fail_after(20):
        await session.initialize()
        tools = await session.list_tools()
        assert [tool.name for tool in tools.tools][:2] == ["text_to_image", "edit_image"]
        result = await session.call_tool(
            "text_to_image", {"prompt": "a red dog", "width": 192, "height": 128, "seed": 4}
        )
        assert not result.is_error, result.content
        assert result.structured_content is not None
        handle = result.structured_content["handle"]
        contents = (await session.read_resource(f"image://{handle}")).contents[0]
    assert isinstance(contents, BlobResourceContents)
    image = decode_image(base64.b64decode(contents.blob), max_bytes=1 << 24, max_pixels=1 << 24)
    assert image.size == (192, 128)


async def test_stdio(tmp_path: Path) -> None:
    store = tmp_path / "store"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "visioncreator.tool_servers", "--store", str(store)],
        env=_env(store),
    )
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await _make_and_read_back(session)
    assert any(store.rglob("img_*.png"))


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One HTTP server with a bearer token for the whole module, on a port the OS picks."""
    root = tmp_path_factory.mktemp("http")
    log_path = root / "stderr.log"
    command = [sys.executable, "-m", "visioncreator.tool_servers", "--transport", "http", "--port", "0"]
    command += ["--store", str(root / "store"), "--token", TOKEN]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=_env(root)
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while (found := re.search(r"listening on (http://\S+)", log_path.read_text())) is None:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not start: " + log_path.read_text()
            time.sleep(0.05)
        yield found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def _post(url: str, **kwargs: Any) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Accept": "application/json, text/event-stream", **kwargs.pop("headers", {})}
    with anyio.fail_after(10):
        async with httpx2.AsyncClient() as client:
            return await client.post(url, json=body, headers=headers, **kwargs)


async def test_http_prints_a_loopback_url(http_url: str) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/mcp", http_url)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", TOKEN, f"Basic {TOKEN}"])
async def test_http_without_the_right_token_is_401(http_url: str, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await _post(http_url, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_http_keeps_dns_rebinding_protection(http_url: str) -> None:
    response = await _post(http_url, headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"})
    assert response.status_code == 421


async def test_http_with_the_token_works(http_url: str) -> None:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20) as http,
        streamable_http_client(http_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await _make_and_read_back(session)
