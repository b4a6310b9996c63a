"""Admission control under a burst: how many calls get in, and how fast the rest are refused.

Fires 32 concurrent text_to_image calls at a server with capacity 1 (max_concurrency) and a
queue of 4 (max_queue), each accepted call held for --latency seconds by the server's
simulated generator time. Expected: 5 accepted (1 running + 4 waiting), 27 refused with a tool
error naming max_queue, and the refusals back in milliseconds, long before the first accepted
call finishes. Runs over the real server in-process (MCP in-memory transport) and over
streamable HTTP (a real server subprocess).

Usage: python benchmarks/queue_admission.py [--calls 32] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from _servers import http_server
from visioncreator.tool_servers import ServerSettings, build_server

CAPACITY, QUEUE = 1, 4


async def burst(session: Any, calls: int, prompt: str = "a red dog") -> tuple[list[float], list[float], list[str]]:
    """Fire ``calls`` concurrent calls; seconds of accepted calls, of refused calls, refusal texts.

    A blank ``prompt`` makes every call a validation error, answered without touching the queue:
    the floor of a tool error's round trip under the same burst.
    """
    accepted: list[float] = []
    refused: list[float] = []
    messages: list[str] = []

    async def one(seed: int) -> None:
        started = time.perf_counter()
        result: CallToolResult = await session.call_tool(
            "text_to_image", {"prompt": prompt, "width": 64, "height": 64, "seed": seed}
        )
        seconds = time.perf_counter() - started
        if result.is_error:
            refused.append(seconds)
            messages.append(" ".join(block.text for block in result.content if isinstance(block, TextContent)))
        else:
            accepted.append(seconds)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as group:
            for seed in range(calls):
                group.start_soon(one, seed)
    return accepted, refused, messages


def _ms(values: list[float], pick: Any) -> str:
    return f"{pick(values) * 1000:7.1f}" if values else "      -"


def report(name: str, result: tuple[list[float], list[float], list[str]], floor: list[float]) -> None:
    accepted, refused, messages = result
    named = sum("max_queue" in text for text in messages)
    print(
        f"{name:<11} {len(accepted):8d} {len(refused):7d} {named:9d}   {_ms(refused, statistics.median)} "
        f"{_ms(refused, max)}   {_ms(floor, statistics.median)} {_ms(floor, max)}   {_ms(accepted, min)}"
    )


HEADER = (
    "transport   accepted refused max_queue   refusal ms     floor ms       first accepted\n"
    "                             in text    median   max   median   max   ms"
)


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        with anyio.fail_after(30):
            await session.initialize()
        yield session


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.5, help="simulated seconds per accepted call")
    args = parser.parse_args()
    # Before MCPServer is built: its default rich INFO handler would log every HTTP request.
    logging.basicConfig(level=logging.WARNING)
    print(f"{args.calls} concurrent calls, max_concurrency {CAPACITY}, max_queue {QUEUE}, {args.latency:g} s per call")
    with tempfile.TemporaryDirectory() as tmp:
        settings = ServerSettings(
            store_root=Path(tmp) / "store", max_concurrency=CAPACITY, max_queue=QUEUE, simulated_latency_s=args.latency
        )
        print(HEADER)
        async with Client(build_server(settings)) as client:
            await burst(client, CAPACITY + QUEUE)  # warm imports and the renderer
            floor = (await burst(client, args.calls, prompt=""))[1]
            report("in-process", await burst(client, args.calls), floor)

        flags = ["--max-concurrency", str(CAPACITY), "--max-queue", str(QUEUE), "--latency", str(args.latency)]
        with http_server(Path(tmp) / "http-store", *flags) as url:
            async with http_session(url) as session:
                await burst(session, CAPACITY + QUEUE)
                floor = (await burst(session, args.calls, prompt=""))[1]
                report("http", await burst(session, args.calls), floor)
    print("floor: the same burst of calls that fail validation (never queued): the transport's own cost.")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    anyio.run(main)
