"""DNS-rebinding protection on every bind address, against real server processes.

A browser tricked by DNS rebinding sends the attacker's name as Host and its page as Origin; the
server must refuse both whatever address it binds, and still serve clients that name it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from tests.security._tool_server import Server, tool_server

TOKEN = "rebinding-token-0123456789"
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


@pytest.fixture(scope="module", params=["127.0.0.2", "::1", "[::1]", "localhost"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--host", request.param, "--allow-host", "tools.example", "--allow-origin", "https://app.example"]
    with tool_server(tmp_path_factory.mktemp("rebinding"), *args) as running:
        yield running


async def _post(server: Server, body: dict[str, Any], **headers: str) -> httpx2.Response:
    with anyio.fail_after(20):
        async with httpx2.AsyncClient(timeout=15) as http:
            accept = {"Accept": "application/json, text/event-stream"}
            return await http.post(server.url, json=body, headers={**accept, **headers})


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}"])
async def test_a_foreign_host_is_refused(server: Server, host: str) -> None:
    response = await _post(server, INITIALIZE, Host=host.format(port=server.port))
    assert response.status_code == 421
    assert "mcp-session-id" not in response.headers


@pytest.mark.parametrize("origin", ["http://evil.example", "http://evil.example:{port}", "null"])
async def test_a_foreign_origin_is_refused(server: Server, origin: str) -> None:
    response = await _post(server, INITIALIZE, Origin=origin.format(port=server.port))
    assert response.status_code == 403
    assert "mcp-session-id" not in response.headers


async def test_a_loopback_server_answers_to_its_names_and_configured_ones(server: Server) -> None:
    own = [server.authority, f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"]
    for host in [*own, "tools.example", f"tools.example:{server.port}"]:
        response = await _post(server, INITIALIZE, Host=host)
        assert response.status_code == 200, host
    for origin in [f"http://{server.authority}", f"http://localhost:{server.port}", "https://app.example"]:
        response = await _post(server, INITIALIZE, Origin=origin)
        assert response.status_code == 200, origin
    # The right name on another port is another site.
    assert (await _post(server, INITIALIZE, Host=f"localhost:{server.port + 1}")).status_code == 421
    assert (await _post(server, INITIALIZE, Origin=f"http://localhost:{server.port + 1}")).status_code == 403


async def test_the_real_client_works_end_to_end(server: Server) -> None:
    origin = {"Origin": f"http://{server.authority}"}
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(timeout=20, headers=origin) as http,
            streamable_http_client(server.url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("text_to_image", {"prompt": "a dog", "width": 64, "height": 64})
    assert "text_to_image" in [tool.name for tool in tools.tools]
    assert not result.is_error, result.content


async def test_a_wildcard_bind_accepts_the_address_connected_to_and_configured_names(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    args = ["--host", "0.0.0.0", "--allow-host", "tools.example"]
    with tool_server(tmp_path_factory.mktemp("wildcard"), *args, env={"VISIONCREATOR_TOKEN": TOKEN}) as server:
        # The URL names the wildcard; clients here connect over loopback.
        loopback = Server(
            url=server.url.replace("0.0.0.0", "127.0.0.1"),
            host="127.0.0.1",
            port=server.port,
            log=server.log,
            process=server.process,
        )
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for host, status in [
            (f"127.0.0.1:{server.port}", 200),
            (f"localhost:{server.port}", 200),
            ("tools.example", 200),
            (f"0.0.0.0:{server.port}", 421),
            ("evil.example", 421),
        ]:
            response = await _post(loopback, INITIALIZE, Host=host, **auth)
            assert response.status_code == status, host
        assert (await _post(loopback, INITIALIZE, Origin="http://evil.example", **auth)).status_code == 403
