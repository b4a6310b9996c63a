"""What one tool call costs beside the generator: our stdio tool server against a bare MCP no-op.

Spawns two stdio servers: a bare ``MCPServer`` with one no-op tool (written below, started as
``python tool_call_overhead.py --bare-server``) and our tool server
(``python -m visioncreator.tool_servers``, synthetic back end, a fresh store). One MCP client
session each; the calls alternate (no-op, ``text_to_image``, ``inspect_image`` of that image) so
that machine load hits every kind alike. A new seed per call: every image is new and is stored.

Prints medians of:

- the bare no-op round trip (the floor of one MCP call on stdio);
- ``text_to_image``: round trip, the back end's own reported generator time (``generator_s``)
  and the difference (what the server and the protocol add);
- ``inspect_image``: round trip;
- the ratio (``text_to_image`` minus generator) / bare no-op (issue 13's target: at most 2.0).

Then the same calls through our ``ToolClient`` (over stdio; with output-schema validation, and
with ``trusted=True`` that skips it where the field exists) and through ``ToolClient`` with an
in-process server, whose CPU per call (``time.process_time``, all threads) is what a rollout
worker pays.

Our servers write behind by default (the synthetic back end's default: the answer comes once the
handle is known and the call's recipe is journaled, the PNG follows on a writer thread);
``--no-write-behind`` starts them with it off (the answer waits for the file).

Usage: python benchmarks/tool_call_overhead.py [--reps 200] [--size 512] [--no-write-behind]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

WRITE_BEHIND: list[bool] = [True]
"""Whether our servers answer before the PNG is written (off with ``--no-write-behind``)."""
_PROMPT = "two red apples left of a blue bench and a sign that says OPEN, watercolor"


def _bare_server() -> None:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bare")

    @server.tool()
    def noop() -> str:
        """Do nothing."""
        return "ok"

    asyncio.run(server.run_stdio_async())


def _children_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process's child processes, by a word of their command line."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) != os.getpid():
            continue
        name = "bare" if "--bare-server" in command else "ours" if "visioncreator.tool_servers" in command else None
        if name is not None:
            found[name] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, result


async def _raw_mcp(store: Path, reps: int, size: int) -> dict[str, float]:
    """The raw MCP client (validation on, as the SDK does by default) against both servers."""
    from mcp import Client, StdioServerParameters

    bare = StdioServerParameters(command=sys.executable, args=[str(Path(__file__).resolve()), "--bare-server"])
    # The SDK hands a server only a few environment variables: PYTHONPATH picks the code measured.
    inherited = {key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}
    ours = StdioServerParameters(
        command=sys.executable,
        args=["-m", "visioncreator.tool_servers", "--store", str(store / "raw"), *_flags()],
        env=inherited or None,
    )
    noop: list[float] = []
    t2i: list[float] = []
    gen: list[float] = []
    inspect: list[float] = []
    async with Client(bare) as bare_client, Client(ours) as our_client:
        await bare_client.list_tools()
        await our_client.list_tools()
        for i in range(reps + 10):
            if i == 10:
                cpu_start = _children_cpu()
            elapsed_noop, _ = await _timed(lambda: bare_client.call_tool("noop", {}))
            args = {"prompt": _PROMPT, "width": size, "height": size, "seed": 1000 + i}
            elapsed_t2i, result = await _timed(lambda a=args: our_client.call_tool("text_to_image", a))
            assert not result.is_error, result
            handle = result.structured_content["handle"]
            elapsed_inspect, checked = await _timed(
                lambda h=handle: our_client.call_tool("inspect_image", {"image": h, "questions": []})
            )
            assert not checked.is_error, checked
            if i >= 10:  # warm-up: imports, caches, the first thread-pool workers
                noop.append(elapsed_noop)
                t2i.append(elapsed_t2i)
                gen.append(float(result.structured_content["generator_s"]))
                inspect.append(elapsed_inspect)
        cpu_end = _children_cpu()
    over = [t - g for t, g in zip(t2i, gen, strict=True)]
    cpu = {name: (cpu_end[name] - cpu_start.get(name, 0.0)) / reps * 1000.0 for name in cpu_end}
    return {
        "noop": _median_ms(noop),
        "t2i": _median_ms(t2i),
        "gen": _median_ms(gen),
        "over": _median_ms(over),
        "inspect": _median_ms(inspect),
        "cpu_bare": cpu.get("bare", float("nan")),
        "cpu_ours": cpu.get("ours", float("nan")),
    }


def _flags() -> list[str]:
    return [] if WRITE_BEHIND[0] else ["--no-write-behind"]


async def _tool_client(
    store: Path, reps: int, size: int, *, trusted: bool | None, in_process: bool
) -> dict[str, float]:
    """Our ToolClient over stdio or in-process; ``trusted`` None leaves the field unset."""
    from visioncreator.graph import ToolClient, ToolServerSpec

    sub = f"tc-{'inproc' if in_process else 'stdio'}-{trusted}"
    spec = ToolServerSpec(args=("-m", "visioncreator.tool_servers", "--store", str(store / sub), *_flags()))
    if trusted is not None:
        spec = dataclasses.replace(spec, trusted=trusted)  # type: ignore[call-arg]
    server = None
    if in_process:
        from visioncreator.tool_servers import ServerSettings, build_server

        server = build_server(ServerSettings(store_root=store / sub, write_behind=WRITE_BEHIND[0]))
    t2i: list[float] = []
    over: list[float] = []
    inspect: list[float] = []
    cpu: list[float] = []
    pair: list[float] = []
    look: list[float] = []
    async with ToolClient(spec=spec, server=server) as client:
        for i in range(reps + 10):
            cpu_start = time.process_time()
            args = {"prompt": _PROMPT, "width": size, "height": size, "seed": 1000 + i}
            elapsed_t2i, outcome = await _timed(lambda a=args: client.call("text_to_image", a))
            assert outcome.ok, outcome
            handle = outcome.structured["handle"]
            elapsed_inspect, checked = await _timed(
                lambda h=handle: client.call("inspect_image", {"image": h, "questions": []})
            )
            assert checked.ok, checked
            cpu_used = time.process_time() - cpu_start
            looked_args = {**args, "seed": 500_000 + i}
            elapsed_look, looked = await _timed(lambda a=looked_args: client.call("text_to_image", a, look=True))
            assert looked.ok, looked
            assert looked.inspection is not None, "the server sent no inspection with the image"
            if i >= 10:
                t2i.append(elapsed_t2i)
                gen = float(outcome.structured["generator_s"])
                over.append(elapsed_t2i - gen)
                inspect.append(elapsed_inspect)
                pair.append(elapsed_t2i + elapsed_inspect - gen)
                look.append(elapsed_look - float(looked.structured["generator_s"]))
                cpu.append(cpu_used)
    return {
        "t2i": _median_ms(t2i),
        "over": _median_ms(over),
        "inspect": _median_ms(inspect),
        "cpu": _median_ms(cpu),
        "pair": _median_ms(pair),
        "look": _median_ms(look),
    }


def _has_trusted() -> bool:
    from visioncreator.graph import ToolServerSpec

    return any(f.name == "trusted" for f in dataclasses.fields(ToolServerSpec))


async def _main(reps: int, size: int) -> None:
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cores: {os.cpu_count()}")
    print(f"{reps} calls of each kind, {size}x{size}, medians in ms; write-behind {'on' if WRITE_BEHIND[0] else 'off'}")
    with tempfile.TemporaryDirectory(prefix="vc-overhead-") as tmp:
        store = Path(tmp)
        raw = await _raw_mcp(store, reps, size)
        print("\n== raw MCP client over stdio (SDK output-schema validation on) ==")
        print(f"bare no-op round trip            {raw['noop']:7.2f}")
        print(f"text_to_image round trip         {raw['t2i']:7.2f}")
        print(f"  generator (back end reported)  {raw['gen']:7.2f}")
        print(f"  round trip minus generator     {raw['over']:7.2f}")
        print(f"inspect_image round trip         {raw['inspect']:7.2f}")
        print(f"ratio (t2i - generator) / no-op  {raw['over'] / raw['noop']:7.2f}   (target <= 2.0)")
        print(f"server CPU per no-op (bare)      {raw['cpu_bare']:7.2f}   (means, from /proc)")
        print(f"server CPU per t2i + inspect     {raw['cpu_ours']:7.2f}   (generator included)")
        print(f"generator share of that          {raw['gen']:7.2f}")

        rows: list[tuple[str, bool | None, bool]] = [("ToolClient stdio, validating", None, False)]
        if _has_trusted():
            rows = [
                ("ToolClient stdio, trusted=False", False, False),
                ("ToolClient stdio, trusted=True", True, False),
                ("ToolClient in-process, trusted=False", False, True),
                ("ToolClient in-process, trusted=True", True, True),
            ]
        else:
            rows.append(("ToolClient in-process, validating", None, True))
            print("\n(ToolServerSpec has no `trusted` field here: validating rows only)")
        print("\n== our ToolClient ==")
        print(
            f"{'':38s} {'t2i':>7s} {'t2i-gen':>8s} {'inspect':>8s} {'CPU/pair':>9s} {'(t2i-gen)/no-op':>16s} "
            f"{'pair-gen':>9s} {'look-gen':>9s}"
        )
        for label, trusted, in_process in rows:
            got = await _tool_client(store, reps, size, trusted=trusted, in_process=in_process)
            print(
                f"{label:38s} {got['t2i']:7.2f} {got['over']:8.2f} {got['inspect']:8.2f} {got['cpu']:9.2f} "
                f"{got['over'] / raw['noop']:16.2f} {got['pair']:9.2f} {got['look']:9.2f}"
            )
    print("\nCPU/pair: process CPU (all threads of this process) for one text_to_image + inspect_image;")
    print("over stdio it leaves out the server process, in-process it is everything.")
    print("pair-gen: text_to_image then inspect_image, minus generator; look-gen: text_to_image asked to look")
    print("(LOOK_META_KEY: the inspection comes back in the same answer, as the graph asks our server),")
    print("minus generator.")


def main() -> None:
    """Parse arguments and run the benchmark (or be the bare server when asked)."""
    if "--bare-server" in sys.argv:
        _bare_server()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--no-write-behind", action="store_true", help="our servers answer only once the PNG is written"
    )
    args = parser.parse_args()
    WRITE_BEHIND[0] = not args.no_write_behind
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main(args.reps, args.size))


if __name__ == "__main__":
    main()
