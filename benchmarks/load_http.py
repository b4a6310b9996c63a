"""Load on the HTTP transport: does the real tool server keep its memory bounded, and drop bad clients?

Starts ``visioncreator-tools --transport http`` with default settings on loopback, warms it up, then
runs each attack in turn while sampling the server's RSS:

- uploads: 12 concurrent ``upload_image`` calls, each a ~20 MB PNG (just under ``max_input_bytes``),
  retrying after ``Retry-After`` when refused;
- slow: 8 slow-header clients (a byte every half second) and 200 half-open connections (connect,
  send nothing); reports how many were closed, how (503 at once, or closed silently) and when;
- duplicate ids: 12 concurrent near-limit uploads in one MCP session all with JSON-RPC id 1 (and
  again with 2 MB images, which the body budget admits all at once).

Prints idle RSS, peak RSS per attack, RSS after the load, and pass/fail against: peak <= 1.5 GB,
after-load within 20% of idle. ``python benchmarks/load_http.py`` (about a minute here).

Extend it by adding an ``Attack`` to ``ATTACKS`` (``benchmarks/load_memory.py`` adds pixel bombs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import peak_sampler, rss_bytes, server_process

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PEAK_LIMIT = int(1.5e9)
SETTLE_TOLERANCE = 0.20
MiB = 1 << 20


@dataclass(frozen=True)
class Attack:
    """One named load: an async function of the server URL that returns what it observed."""

    name: str
    run: Callable[[str], Coroutine[Any, Any, dict[str, Any]]]


def near_limit_png(max_bytes: int = 20 * MiB) -> bytes:
    """A noise PNG just under ``max_bytes`` (incompressible, stored without compression)."""
    side = int((max_bytes * 0.97 / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    assert len(out.getvalue()) <= max_bytes
    return out.getvalue()


async def open_session(http: httpx2.AsyncClient, url: str) -> str:
    """An initialised MCP session on ``url``; its id."""
    init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "load", "version": "1"}}
    response = await http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
    response.raise_for_status()
    session = response.headers["mcp-session-id"]
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await http.post(url, json=done, headers={"mcp-session-id": session})
    return session


def upload_body(request_id: int, image: bytes) -> bytes:
    """A JSON-RPC ``tools/call`` of ``upload_image`` with ``image`` in base64."""
    arguments = {"data": base64.b64encode(image).decode()}
    call = {"name": "upload_image", "arguments": arguments}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": call}).encode()


async def _post(http: httpx2.AsyncClient, url: str, body: bytes, session: str) -> httpx2.Response:
    return await http.post(url, content=body, headers={"mcp-session-id": session})


async def uploads(url: str, *, count: int = 12, tries: int = 60) -> dict[str, Any]:
    image = near_limit_png()
    async with httpx2.AsyncClient(timeout=120, headers=ACCEPT) as http:
        session = await open_session(http, url)
        statuses: Counter[int] = Counter()

        async def one(request_id: int) -> bool:
            body = upload_body(request_id, image)
            for _ in range(tries):
                response = await _post(http, url, body, session)
                statuses[response.status_code] += 1
                if response.status_code != 503:
                    return response.status_code == 200 and '"isError":false' in response.text
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            return False

        started = time.monotonic()
        done = await asyncio.gather(*(one(i + 1) for i in range(count)))
    return {
        "image_mb": round(len(image) / 1e6, 1),
        "stored": sum(done),
        "of": count,
        "responses": dict(statuses),
        "seconds": round(time.monotonic() - started, 1),
    }


async def slow_clients(url: str, *, slow: int = 8, half_open: int = 200, limit_s: float = 30.0) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    started = time.monotonic()

    async def watch(trickle: bool) -> tuple[str, float]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            request = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-Slow: ".encode()
            deadline = time.monotonic() + limit_s
            sent = 0
            while time.monotonic() < deadline:
                if trickle and sent < len(request):
                    writer.write(request[sent : sent + 1])
                    sent += 1
                try:
                    data = await asyncio.wait_for(reader.read(4096), 0.5)
                except TimeoutError:
                    continue
                except ConnectionError:
                    return "reset", time.monotonic() - started
                return ("503" if data.startswith(b"HTTP/1.1 503") else "closed"), time.monotonic() - started
            return "still open", time.monotonic() - started
        finally:
            writer.close()

    results = await asyncio.gather(*(watch(True) for _ in range(slow)), *(watch(False) for _ in range(half_open)))
    outcome: dict[str, Any] = {}
    for kind, group in (("slow", results[:slow]), ("half_open", results[slow:])):
        counts = Counter(how for how, _ in group)
        closed = [at for how, at in group if how != "still open"]
        outcome[kind] = {**counts, "last_closed_s": round(max(closed), 1) if closed else None}
    return outcome


async def duplicate_ids(url: str, *, count: int = 12, image_bytes: int = 20 * MiB) -> dict[str, Any]:
    image = near_limit_png(image_bytes)
    async with httpx2.AsyncClient(timeout=120, headers=ACCEPT) as http:
        session = await open_session(http, url)
        body = upload_body(1, image)
        started = time.monotonic()
        responses = await asyncio.wait_for(asyncio.gather(*(_post(http, url, body, session) for _ in range(count))), 90)
    return {
        "answered": len(responses),
        "of": count,
        "responses": dict(Counter(r.status_code for r in responses)),
        "seconds": round(time.monotonic() - started, 1),
    }


ATTACKS: list[Attack] = [
    Attack("uploads", uploads),
    Attack("slow_clients", slow_clients),
    Attack("duplicate_ids", duplicate_ids),
    # Small enough that the body budget admits them all: every duplicate meets the id check.
    Attack("duplicate_ids_2mb", functools.partial(duplicate_ids, image_bytes=2 * MiB)),
]


async def warm_up(url: str) -> None:
    """One small upload and call, so idle RSS includes what any first request loads (codecs, schemas)."""
    small = near_limit_png(1 * MiB)
    async with httpx2.AsyncClient(timeout=60, headers=ACCEPT) as http:
        session = await open_session(http, url)
        (await _post(http, url, upload_body(1, small), session)).raise_for_status()


def settled_rss(pid: int, seconds: float = 3.0) -> int:
    """RSS after ``seconds`` with no load (the lowest of a few samples)."""
    samples = []
    for _ in range(int(seconds / 0.25)):
        time.sleep(0.25)
        samples.append(rss_bytes(pid))
    return min(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only these attacks (repeatable)")
    parser.add_argument("server_args", nargs="*", help="extra server arguments (after --)")
    options = parser.parse_args(argv)
    attacks = [a for a in ATTACKS if not options.only or a.name in options.only]
    with server_process(options.server_args) as (process, url):
        asyncio.run(warm_up(url))
        idle = settled_rss(process.pid)
        print(f"server {url} pid {process.pid}; idle RSS {idle / MiB:.0f} MiB", flush=True)
        peaks: dict[str, int] = {}
        for attack in attacks:
            with peak_sampler(process.pid) as peak:
                observed = asyncio.run(attack.run(url))
            peaks[attack.name] = peak.bytes
            print(f"{attack.name}: peak RSS {peak.bytes / MiB:.0f} MiB; {json.dumps(observed)}", flush=True)
        after = settled_rss(process.pid)
        assert process.poll() is None, "the server died under load"
    peak_ok = max(peaks.values()) <= PEAK_LIMIT
    settle_ok = after <= idle * (1 + SETTLE_TOLERANCE)
    print(f"after load RSS {after / MiB:.0f} MiB ({after / idle - 1:+.0%} of idle)")
    print(f"peak <= {PEAK_LIMIT / 1e9:.1f} GB: {'PASS' if peak_ok else 'FAIL'}")
    print(f"after load within {SETTLE_TOLERANCE:.0%} of idle: {'PASS' if settle_ok else 'FAIL'}")
    return 0 if peak_ok and settle_ok else 1


if __name__ == "__main__":
    sys.exit(main())
