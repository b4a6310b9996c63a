"""What an image costs to move: a handle versus the pixels, over stdio and streamable HTTP.

For each size (256, 512, 1024 square) and transport (a real server subprocess each), times
``text_to_image`` with the synthetic back end in two modes:

- ``handle``: the call alone; the client holds a handle (what the agent's graph does);
- ``inline``: the call, then a read of ``image://{handle}`` (what a client that wants the
  pixels must move: the PNG, base64 in JSON).

Bytes: over stdio, the size of the serialized JSON-RPC results (``model_dump_json``); over HTTP,
the response bytes that really crossed the socket (SSE framing included), counted by a
wrapping httpx transport. A third row per size, ``noise``, reads a noisy PNG of that size
(uploaded once): the worst case for PNG size, where synthetic images (flat shapes) compress well.

The MCP client caps one SSE event at 1 MiB by default, and a 1024 noise PNG is ~3 MiB (~4 MiB
as base64): this benchmark raises the client's cap (``max_sse_event_size``, --sse-cap) and
reports once whether the default cap would have refused that read.

Usage: python benchmarks/transport_cost.py [--reps 15] [--sizes 256 512 1024]
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import DEFAULT_MAX_SSE_EVENT_SIZE, streamable_http_client
from PIL import Image

from _servers import http_server


class _Counter:
    def __init__(self) -> None:
        self.received = 0


class _CountingStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, counter: _Counter) -> None:
        self._inner = inner
        self._counter = counter

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._counter.received += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CountingTransport(httpx2.AsyncBaseTransport):
    """The default transport, counting response body bytes as they arrive."""

    def __init__(self, counter: _Counter) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._counter = counter

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CountingStream(response.stream, self._counter)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def http_session(url: str, counter: _Counter, sse_cap: int | None) -> AsyncIterator[ClientSession]:
    http = httpx2.AsyncClient(transport=_CountingTransport(counter), timeout=httpx2.Timeout(60.0))
    async with (
        http,
        streamable_http_client(url, http_client=http, max_sse_event_size=sse_cap) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(30):
            await session.initialize()
        yield session


@asynccontextmanager
async def stdio_session(store: Path) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "visioncreator.tool_servers", "--store", str(store)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    with (store.parent / "stdio-server.log").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            with anyio.fail_after(60):
                await session.initialize()
            yield session


def _noise_png(side: int) -> str:
    buffer = io.BytesIO()
    Image.effect_noise((side, side), 80).convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


Measure = Callable[[int], Awaitable[int]]
"""One measured operation for rep ``i``; returns the JSON bytes of its results."""


async def _measure(op: Measure, reps: int, counter: _Counter | None) -> tuple[float, int]:
    """Median milliseconds and median bytes (wire bytes when a counter is given) of ``reps`` runs."""
    await op(-1)  # warm: first render of a size, first connection
    times: list[float] = []
    sizes: list[int] = []
    for rep in range(reps):
        before = counter.received if counter else 0
        started = time.perf_counter()
        json_bytes = await op(rep)
        times.append((time.perf_counter() - started) * 1000)
        sizes.append(counter.received - before if counter else json_bytes)
    return statistics.median(times), int(statistics.median(sizes))


async def _table(name: str, session: ClientSession, sizes: list[int], reps: int, counter: _Counter | None) -> None:
    async def call(size: int, seed: int) -> tuple[str, int]:
        arguments = {"prompt": "two red apples left of a blue car, a sign that says OPEN", "seed": seed + 1000}
        result = await session.call_tool("text_to_image", {**arguments, "width": size, "height": size})
        assert not result.is_error, result.content
        assert result.structured_content is not None
        return str(result.structured_content["handle"]), len(result.model_dump_json(by_alias=True, exclude_none=True))

    async def read(handle: str) -> int:
        contents = await session.read_resource(f"image://{handle}")
        return len(contents.model_dump_json(by_alias=True, exclude_none=True))

    for size in sizes:
        noise = await session.call_tool("upload_image", {"data": _noise_png(size)})
        assert noise.structured_content is not None, noise.content
        noise_handle = str(noise.structured_content["handle"])

        async def handle_only(rep: int, size: int = size) -> int:
            return (await call(size, rep))[1]

        async def inline(rep: int, size: int = size) -> int:
            handle, json_bytes = await call(size, rep)
            return json_bytes + await read(handle)

        async def noise_read(rep: int, handle: str = noise_handle) -> int:
            return await read(handle)

        for mode, op in (("handle", handle_only), ("inline", inline), ("noise", noise_read)):
            with anyio.fail_after(300):
                ms, nbytes = await _measure(op, reps, counter)
            print(f"{name:<6} {size:5d}  {mode:<7} {ms:9.1f}  {nbytes:12,d}")


async def _default_cap_check(url: str, size: int) -> str:
    """Whether a client with the SDK's default SSE cap can read a noisy ``size`` PNG."""
    counter = _Counter()
    async with http_session(url, counter, DEFAULT_MAX_SSE_EVENT_SIZE) as session:
        uploaded = await session.call_tool("upload_image", {"data": _noise_png(size)})
        assert uploaded.structured_content is not None, uploaded.content
        try:
            with anyio.fail_after(60):
                await session.read_resource(f"image://{uploaded.structured_content['handle']}")
        except Exception as exc:
            return f"FAILS ({type(exc).__name__}: {str(exc)[:120]})"
    return "works"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=15, help="measured calls per row")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--sse-cap", type=int, default=64 << 20, help="client max_sse_event_size in bytes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("transport size  mode    median ms  bytes/call")
    with tempfile.TemporaryDirectory() as tmp:
        async with stdio_session(Path(tmp) / "stdio-store") as session:
            await _table("stdio", session, args.sizes, args.reps, None)
        with http_server(Path(tmp) / "http-store") as url:
            counter = _Counter()
            async with http_session(url, counter, args.sse_cap) as session:
                await _table("http", session, args.sizes, args.reps, counter)
            verdict = await _default_cap_check(url, max(args.sizes))
    print(
        "bytes: stdio = JSON of the results; http = response bytes on the socket (SSE framing included).\n"
        f"http client SSE cap raised to {args.sse_cap:,} bytes; with the SDK default "
        f"({DEFAULT_MAX_SSE_EVENT_SIZE:,}) reading a {max(args.sizes)} noise PNG {verdict}."
    )


if __name__ == "__main__":
    anyio.run(main)
