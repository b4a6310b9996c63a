"""Real HTTP tool server processes for the transport tests, and raw-socket clients to misbehave with."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

STARTUP_S = 30.0


@dataclass(frozen=True)
class Server:
    """A running server: its URL, the host and port to put in headers, and its stderr so far."""

    url: str
    host: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def authority(self) -> str:
        """``host:port`` as a Host header spells it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text()


@contextmanager
def tool_server(
    root: Path, *args: str, env: Mapping[str, str] | None = None, startup_s: float = STARTUP_S
) -> Iterator[Server]:
    """``python -m visioncreator.tool_servers --transport http --port 0 <args>``, stopped on exit."""
    log = root / "stderr.log"
    command = [sys.executable, "-m", "visioncreator.tool_servers", "--transport", "http", "--port", "0"]
    command += ["--store", str(root / "store"), *args]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A token in the environment running the tests would switch authentication on.
    environment.pop("VISIONCREATOR_TOKEN", None)
    environment.update(env or {})
    with log.open("w") as stream:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stream, env=environment
        )
    try:
        deadline = time.monotonic() + startup_s
        while (found := re.search(r"listening on (http://\S+)", log.read_text())) is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start: " + log.read_text()
            time.sleep(0.05)
        url = found.group(1)
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        yield Server(url=url, host=parts.hostname, port=parts.port, log=log, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def connect(server: Server, timeout_s: float = 10.0) -> socket.socket:
    """A raw TCP connection to ``server`` whose reads give up after ``timeout_s``."""
    return socket.create_connection((server.host, server.port), timeout=timeout_s)


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the socket's timeout)."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def request_head(server: Server, method: str = "POST", **headers: str) -> bytes:
    """A request line and headers for ``server``'s MCP path (no body), ``Host`` included."""
    lines = [f"{method} {urlsplit(server.url).path} HTTP/1.1", f"Host: {server.authority}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a ``Content-Length`` body (bounded by the socket's timeout)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


class RestartableServer:
    """A real HTTP tool server process that a test can kill (SIGKILL) and start again on the same port.

    Its store stays in ``folder / "server-store"`` across restarts, as a restarted server's would.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.store = folder / "server-store"
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, startup_s: float = STARTUP_S) -> None:
        """Start it (on the port of the previous start, if any) with ``extra`` server arguments."""
        log = self.folder / f"server-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "visioncreator.tool_servers", "--transport", "http"]
        args += ["--port", str(self.port), "--store", str(self.store), *extra]
        environment = {k: v for k, v in os.environ.items() if k != "VISIONCREATOR_TOKEN"}
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True, env=environment
            )
        deadline = time.monotonic() + startup_s
        while (found := re.search(r"listening on (http://\S+)", log.read_text())) is None:
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the tool server did not start: " + log.read_text()
            time.sleep(0.05)
        self.url = found.group(1)
        port = urlsplit(self.url).port
        assert port is not None
        self.port = port

    def kill(self) -> None:
        """SIGKILL the server (and anything it started), if it runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


async def text_to_image_over_mcp(server: Server, headers: Mapping[str, str] | None = None) -> Any:
    """One small ``text_to_image`` call through the real MCP client; the ``CallToolResult``."""
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(timeout=20, headers=dict(headers or {})) as http,
            streamable_http_client(server.url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await session.call_tool("text_to_image", {"prompt": "a dog", "width": 64, "height": 64})
