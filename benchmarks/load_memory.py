"""Decoded-image memory of the real HTTP tool server under pixel-heavy calls (loopback, < 2 min).

Starts ``python -m visioncreator.tool_servers --transport http --port 0`` with default settings,
measures its idle RSS (after one small warm-up call, so lazy imports are counted as idle), then:

  (a) uploads one 6300x6300 PNG (~300 KB on the wire, 39.7 Mpx decoded) with ``upload_image``;
  (b) runs 8 concurrent ``reference_to_image`` calls, each with 4 such uploads as references;
  (c) the same with 4 such images already in the store at full size (as an evaluation suite's
      input files are), so the decode of the full image is part of every reference load.

RSS is sampled every 20 ms during each attack; after the load the benchmark waits for the
server to settle and checks: peak <= 1.5 GB and settled RSS <= 1.2 x idle.

    .venv/bin/python benchmarks/load_memory.py
    # the code before the pixel budget, for comparison (a tree from ``git archive``):
    PYTHONPATH=/tmp/head/tool_servers .venv/bin/python benchmarks/load_memory.py
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from PIL import Image, ImageDraw

from _load import peak_rss_bytes, peak_sampler, rss_bytes, server_process
from visioncreator.tool_servers import ImageStore

SIDE = 6300
MB = 1e6
PEAK_LIMIT = 1.5e9
AFTER_RATIO = 1.2


def big_image(seed: int) -> Image.Image:
    """A 6300x6300 canvas, mostly one colour, with a few hundred blobs: ~300 KB as a PNG."""
    rng = random.Random(seed)
    image = Image.new("RGB", (SIDE, SIDE), (200, 180, 160 + seed))
    draw = ImageDraw.Draw(image)
    for _ in range(1000):
        x, y = rng.randrange(SIDE), rng.randrange(SIDE)
        size = rng.randrange(5, 80), rng.randrange(5, 80)
        draw.ellipse((x, y, x + size[0], y + size[1]), fill=(rng.randrange(256), rng.randrange(256), 0))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        with anyio.fail_after(30):
            await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any] | str:
    """The structured result, or the error text."""
    with anyio.fail_after(150):
        result = await session.call_tool(tool, arguments)
    if result.is_error or result.structured_content is None:
        return " ".join(getattr(block, "text", "") for block in result.content)
    return dict(result.structured_content)


async def attack(
    pid: int, name: str, work: Callable[[], Awaitable[list[dict[str, Any] | str]]], rows: list[tuple[str, float]]
) -> list[dict[str, Any] | str]:
    started = time.perf_counter()
    with peak_sampler(pid, interval_s=0.02) as peak:
        results = await work()
    errors = [r for r in results if isinstance(r, str)]
    print(
        f"{name:<58} peak {peak.bytes / MB:7.0f} MB  now {rss_bytes(pid) / MB:6.0f} MB  "
        f"{time.perf_counter() - started:5.1f} s  {len(results) - len(errors)}/{len(results)} ok"
    )
    for error in sorted(set(errors))[:3]:
        print(f"    error: {error[:200]}")
    rows.append((name, peak.bytes))
    return results


async def settled_rss(pid: int, settle_s: float) -> float:
    await asyncio.sleep(settle_s)
    samples = []
    for _ in range(10):
        samples.append(rss_bytes(pid))
        await asyncio.sleep(0.05)
    return float(statistics.median(samples))


async def run(args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix="vc-load-memory-") as work:
        return await measure(args, Path(work))


async def measure(args: argparse.Namespace, work: Path) -> bool:
    store_dir = work / "store"
    started = time.perf_counter()
    images = [big_image(seed) for seed in range(4)]
    uploads = [base64.b64encode(png_bytes(image)).decode("ascii") for image in images]
    # Full-size images already in the store, as materialized evaluation inputs are.
    store = ImageStore(store_dir)
    stored = []
    for image in images:
        # One pixel apart from the uploads: other handles, the same decoding cost.
        image.putpixel((0, 0), (1, 2, 3))
        stored.append(store.put(image).handle)
    del images
    print(
        f"made 4 uploads of {SIDE}x{SIDE} ({len(uploads[0]) * 3 // 4 / 1e3:.0f} KB each) and 4 stored images "
        f"in {time.perf_counter() - started:.1f} s"
    )

    rows: list[tuple[str, float]] = []
    with server_process(args.server_arg, store=store_dir) as (process, url):
        pid = process.pid
        async with http_session(url) as session:
            warm = await call(session, "text_to_image", prompt="a red dog", width=64, height=64, seed=1)
            assert not isinstance(warm, str), warm
            idle = await settled_rss(pid, 1.0)
            print(f"{'idle (after one 64x64 warm-up call)':<58} rss  {idle / MB:7.0f} MB")

            async def one_upload() -> list[dict[str, Any] | str]:
                return [await call(session, "upload_image", data=uploads[0])]

            first = await attack(pid, "(a) 1 upload_image of a 39.7 Mpx PNG", one_upload, rows)

            async def more_uploads() -> list[dict[str, Any] | str]:
                return [await call(session, "upload_image", data=data) for data in uploads[1:]]

            rest = await attack(pid, "    setup: 3 more uploads, one after another", more_uploads, rows)
            handles = [r["handle"] for r in first + rest if isinstance(r, dict)]
            if isinstance(first[0], dict):
                print(f"    uploads stored at {first[0]['width']}x{first[0]['height']}")

            def references(refs: list[str]) -> Callable[[], Awaitable[list[dict[str, Any] | str]]]:
                async def calls() -> list[dict[str, Any] | str]:
                    return list(
                        await asyncio.gather(
                            *(
                                call(session, "reference_to_image", prompt=f"a dog, take {i}", references=refs, seed=i)
                                for i in range(8)
                            )
                        )
                    )

                return calls

            await attack(pid, "(b) 8 concurrent reference_to_image x 4 uploaded refs", references(handles), rows)
            await attack(pid, "(c) 8 concurrent reference_to_image x 4 stored 39.7 Mpx refs", references(stored), rows)
            after = await settled_rss(pid, args.settle)
            hwm = peak_rss_bytes(pid)
    print(f"{f'after the load (settled {args.settle:g} s)':<58} rss  {after / MB:7.0f} MB")
    print(f"{'kernel high-water mark (VmHWM), whole run':<58} rss  {hwm / MB:7.0f} MB")
    peak = max(value for _, value in rows)
    peak_ok = peak <= PEAK_LIMIT
    after_ok = after <= AFTER_RATIO * idle
    print(f"{'PASS' if peak_ok else 'FAIL'}: peak {peak / MB:.0f} MB <= {PEAK_LIMIT / MB:.0f} MB")
    print(
        f"{'PASS' if after_ok else 'FAIL'}: after {after / MB:.0f} MB <= {AFTER_RATIO:g} x idle "
        f"{idle / MB:.0f} MB = {AFTER_RATIO * idle / MB:.0f} MB"
    )
    return peak_ok and after_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait after the load before measuring")
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for the server (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.exit(0 if asyncio.run(run(args)) else 1)


if __name__ == "__main__":
    main()
