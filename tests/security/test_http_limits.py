"""The HTTP transport's caps, against real server processes: raw sockets for the misbehaving
clients, the real MCP client to show the server still serves.

Each server runs with small limits (CLI flags), so every cap is reached with a few requests.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import numpy as np
import pytest
from PIL import Image
from tests.security._tool_server import (
    Server,
    connect,
    read_response,
    read_until_closed,
    request_head,
    text_to_image_over_mcp,
    tool_server,
)

ACCEPT = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with every cap small; tests leave it as they found it (their connections closed)."""
    args = ["--header-timeout", "1", "--body-timeout", "1.5", "--max-connections", "6"]
    args += ["--max-inflight-body-bytes", "100000", "--max-session-requests", "2", "--latency", "1.5"]
    with tool_server(tmp_path_factory.mktemp("limits"), *args) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=20, headers=ACCEPT) as client:
        yield client


async def _session(http: httpx2.AsyncClient, server: Server) -> str:
    """A real MCP session, initialised; its id."""
    response = await http.post(server.url, json=INITIALIZE)
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    done = await http.post(
        server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={"mcp-session-id": session}
    )
    assert done.status_code == 202, done.text
    return session


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _elapsed_until_closed(sock: socket.socket) -> tuple[float, bytes]:
    start = time.monotonic()
    data = read_until_closed(sock)
    return time.monotonic() - start, data


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0, every_s: float = 0.02) -> None:
    """Poll ``check`` until it is true; fail after ``timeout_s``."""
    with anyio.fail_after(timeout_s):
        for _ in range(int(timeout_s / every_s) + 1):
            if await check():
                return
            await anyio.sleep(every_s)
    raise AssertionError(f"not true within {timeout_s} s")


def test_slow_headers_are_closed_within_the_header_timeout(server: Server) -> None:
    silent, slow = connect(server), connect(server)
    with silent, slow:
        slow.sendall(b"POST /mcp HTTP/1.1\r\nHost: ")  # and nothing more
        (waited_silent, said_silent), (waited_slow, said_slow) = map(_elapsed_until_closed, (silent, slow))
    assert said_silent == said_slow == b""
    # header_timeout is 1 s; the first wait absorbs it, the second finds the connection closed.
    assert 0.5 < waited_silent < 5
    assert waited_slow < 5


def test_a_kept_alive_connection_gets_a_fresh_header_deadline(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(request_head(server, "GET", Accept="text/event-stream"))
        first = read_response(sock)
        assert _status(first) == 400  # no session: answered, and the connection stays open
        sock.sendall(b"GET /mcp HTTP/1.1\r\n")  # the next request stalls
        waited, said = _elapsed_until_closed(sock)
    assert said == b""
    assert waited < 5


def test_a_slow_body_is_answered_408_and_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(request_head(server, Content_Type="application/json", Content_Length="1000") + b'{"jsonrpc"')
        waited, said = _elapsed_until_closed(sock)
    assert _status(said) == 408
    assert b"connection: close" in said.lower()
    assert 1.0 < waited < 5


def test_connections_over_the_cap_get_503_and_are_closed(server: Server) -> None:
    held = [connect(server) for _ in range(6)]
    try:
        with connect(server) as extra:
            said = read_until_closed(extra)
        assert _status(said) == 503
        assert b"retry-after: 1" in said.lower()
    finally:
        for sock in held:
            sock.close()


async def test_bodies_over_the_inflight_budget_get_503_with_retry_after(
    server: Server, http: httpx2.AsyncClient
) -> None:
    session = await _session(http, server)
    # A slow call padded to 90 kB holds 90 of the 100 kB budget until it answers (JSON allows the
    # trailing spaces); its SSE response starts once the guard has admitted it.
    padded = json.dumps(_slow_call(3)).encode() + b" " * 90_000
    json_headers = {"content-type": "application/json"}
    with anyio.fail_after(20):
        async with http.stream(
            "POST", server.url, content=padded, headers={**json_headers, "mcp-session-id": session}
        ) as held:
            assert held.status_code == 200
            refused = await http.post(server.url, content=b" " * 20_000, headers=json_headers)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "retry shortly" in refused.json()["error"]["message"]

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(20):
                    yield b" " * 1000

            # A chunked body (no Content-Length) is counted as it streams, and cut when it passes.
            chunked = await http.post(server.url, content=chunks(), headers=json_headers)
            assert chunked.status_code == 503
            await held.aread()

    async def admitted() -> bool:
        response = await http.post(server.url, content=b" " * 20_000, headers=json_headers)
        return response.status_code != 503

    # Once the call has answered the same request is admitted (and refused by the MCP app: no JSON).
    await _until(admitted)


def _slow_call(request_id: int) -> dict[str, Any]:
    """A tools/call that takes the server's --latency (1.5 s) to answer."""
    arguments = {"prompt": "a red dog", "width": 64, "height": 64, "seed": request_id}
    params = {"name": "text_to_image", "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_requests_over_the_session_cap_get_429(server: Server, http: httpx2.AsyncClient) -> None:
    session, other = await _session(http, server), await _session(http, server)
    headers = {"mcp-session-id": session}
    ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
    with anyio.fail_after(20):
        # Two slow calls hold the session's two slots: their SSE responses start once admitted.
        async with (
            http.stream("POST", server.url, json=_slow_call(1), headers=headers) as first,
            http.stream("POST", server.url, json=_slow_call(2), headers=headers) as second,
        ):
            assert first.status_code == second.status_code == 200
            refused = await http.post(server.url, json=ping, headers=headers)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["message"].startswith("this session already has 2 requests in flight")
            # Another session is not held back.
            assert (await http.post(server.url, json=ping, headers={"mcp-session-id": other})).status_code == 200
            await first.aread()
            await second.aread()

    async def served() -> bool:
        return (await http.post(server.url, json=ping, headers=headers)).status_code == 200

    # The slots free as the calls' handlers return, just after their last bytes.
    await _until(served)


async def test_a_duplicate_request_id_is_refused_while_the_first_still_answers(
    server: Server, http: httpx2.AsyncClient
) -> None:
    session = await _session(http, server)
    headers = {"mcp-session-id": session}
    call = _slow_call(7)
    with anyio.fail_after(20):
        # The first call takes --latency (1.5 s); its SSE response starts once the guard admitted it.
        async with http.stream("POST", server.url, json=call, headers=headers) as first:
            assert first.status_code == 200
            started = time.monotonic()
            second = await http.post(server.url, json=call, headers=headers)
            assert time.monotonic() - started < 1.0  # refused at once, not queued behind the first
            assert second.status_code == 409
            error = second.json()
            assert error["id"] == 7
            assert error["error"]["code"] == -32600
            assert "request id 7 is already in flight" in error["error"]["message"]
            body = (await first.aread()).decode()
    result = json.loads(next(line[6:] for line in body.splitlines() if line.startswith("data: {")))
    assert result["id"] == 7
    assert not result["result"]["isError"]

    async def reused() -> bool:
        ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
        return (await http.post(server.url, json=ping, headers=headers)).status_code == 200

    # The id is free again once the first call's handler has returned.
    await _until(reused)


async def test_the_server_still_serves_the_real_client(server: Server) -> None:
    result = await text_to_image_over_mcp(server)
    assert not result.is_error, result.content


async def test_a_large_upload_leaves_the_session_working(tmp_path: Path) -> None:
    # After a body over 1 MiB the guard hands the session a no-op notification (so the SDK lets go
    # of the large message); the session and its next calls must not notice.
    pixels = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    assert out.tell() > 1 << 20
    with tool_server(tmp_path) as server:
        async with httpx2.AsyncClient(timeout=30, headers=ACCEPT) as http:
            session = await _session(http, server)
            headers = {"mcp-session-id": session}
            upload = {"name": "upload_image", "arguments": {"data": base64.b64encode(out.getvalue()).decode()}}
            call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": upload}
            with anyio.fail_after(30):
                response = await http.post(server.url, json=call, headers=headers)
                ping = await http.post(server.url, json={"jsonrpc": "2.0", "id": 6, "method": "ping"}, headers=headers)
        assert response.status_code == 200
        assert '"isError":false' in response.text
        assert ping.status_code == 200
        assert '"id":6' in ping.text
        assert "Traceback" not in server.stderr()
