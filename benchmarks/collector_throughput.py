"""Collector throughput: trajectories per second with the expert and the synthetic tools, by concurrency.

Each level collects the same trajectories (``--tasks`` built-in suite tasks, single and multi
alternating, x ``--group-size`` samples) with :func:`visioncreator.rl.collector.collect` on an
in-process synthetic tool server (the MCP server in this process, in-memory transport: no
subprocess, no sockets), faults at ``--fault-rate``, rewards scored, no checkpointer. Records stay
in memory. A warm-up level runs first so imports and caches do not count.

Printed per concurrency c: trajectories timed, wall seconds, trajectories/s, speed-up
``thr(c) / thr(1)`` and parallel efficiency ``thr(c) / (c * thr(1))``. Everything runs on one
event loop, so on a CPU-bound expert the ceiling is one core: speed-up comes only from overlapping
the graph's awaits, and efficiency falls as c grows.

Usage: PYTHONPATH=. python benchmarks/collector_throughput.py [--concurrency 1 16 64] [--tasks 16] [--group-size 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from visioncreator.graph.offline import expert_policy
from visioncreator.rl.collector import CollectConfig, collect, synthetic_tools


def suite_tasks(n: int) -> list[dict[str, Any]]:
    lines = files("visioncreator.evals").joinpath("data", "synthetic.jsonl").read_text().splitlines()
    tasks = [json.loads(line) for line in lines if line.strip()]
    singles = [t for t in tasks if t["split"] == "single"]
    multis = [t for t in tasks if t["split"] == "multi"]
    mixed = [t for pair in zip(singles, multis, strict=False) for t in pair]
    return mixed[:n]


async def level(tasks: list[dict[str, Any]], store: Path, concurrency: int, args: argparse.Namespace) -> float:
    config = CollectConfig(
        group_size=args.group_size, concurrency=concurrency, store=store, fault_rate=args.fault_rate, seed=args.seed
    )
    async with synthetic_tools(config) as tools:
        started = time.perf_counter()
        records = await collect(tasks, policy=expert_policy(), tools=tools, config=config)
        wall = time.perf_counter() - started
    assert len(records) == len(tasks) * args.group_size
    return wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tasks = suite_tasks(args.tasks)
    n = len(tasks) * args.group_size
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        await level(tasks[:2], store, 2, args)  # warm-up
        print(f"collector throughput: expert policy, in-process synthetic tool server, fault rate {args.fault_rate}")
        print(f"{n} trajectories per level ({len(tasks)} tasks x group {args.group_size}); {os.cpu_count()} CPUs")
        print(
            f"{'concurrency':>11} {'trajectories':>12} {'wall s':>8} {'traj/s':>8} {'speed-up':>9} {'efficiency':>10}"
        )
        base: float | None = None
        for c in args.concurrency:
            wall = await level(tasks, store, c, args)
            rate = n / wall
            base = base or rate * (1 if c == 1 else float("nan"))
            speedup = rate / base
            print(f"{c:>11} {n:>12} {wall:>8.2f} {rate:>8.2f} {speedup:>8.2f}x {speedup / c:>10.3f}")


if __name__ == "__main__":
    asyncio.run(main())
