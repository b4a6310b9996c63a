"""Rollout scaling: the single event loop against the process pool, I/O-bound and CPU-bound back ends.

Expert policy, in-process synthetic tool servers, built-in suite tasks (single and multi
alternating), faults at ``--fault-rate``, rewards scored, no checkpointer, records in memory.

- I/O-bound rows, for each ``--latencies`` value (``CollectConfig.tool_latency_s``: every
  image-producing call waits that long, like a remote generator): throughput at 1 trajectory in
  flight (single loop), and at ``--concurrency`` (64) in flight on the single loop and on the
  process pool (``--workers`` processes, the concurrency split between them). Efficiency =
  throughput_64 / (64 x throughput_1): 1.0 means 64 in flight finish 64 times as many per second.
- CPU-bound rows (latency 0): trajectories/s of one process against the pool, the same
  concurrency, and the speed-up.

Every row prints wall seconds, CPU seconds (driver + workers), CPU ms per trajectory, ``cores`` =
CPU s / wall s, image calls per trajectory, and the 1-minute load average when it started (the
machine is shared: read figures against it). Pool start-up (spawn, imports, servers) is printed
apart and not timed; each pool collects a warm-up before its timed rows. ``--profile DIR`` writes
each pool worker's cProfile statistics there and prints where a worker's CPU goes.

Usage: .venv/bin/python benchmarks/rollout_scaling.py [--latencies 0.1 1.0] [--workers 2] [--waves 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pstats
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from visioncreator.graph import expert_policy
from visioncreator.rl import CollectConfig, TrajectoryRecord, collect
from visioncreator.rl.collection import PolicySpec, synthetic_tools
from visioncreator.rl.collection.pool import PoolSettings, ProcessWorkers

IMAGE_TOOLS = ("text_to_image", "edit_image", "reference_to_image")
PROFILED = [0]
"""Trajectories the profiled pools ran (warm-ups included)."""


def mixed_tasks() -> list[dict[str, Any]]:
    lines = files("visioncreator.evals").joinpath("data", "synthetic.jsonl").read_text().splitlines()
    tasks = [json.loads(line) for line in lines if line.strip()]
    singles = [t for t in tasks if t["split"] == "single"]
    multis = [t for t in tasks if t["split"] == "multi"]
    return [t for pair in zip(singles, multis, strict=False) for t in pair]


def workload(n: int) -> tuple[list[dict[str, Any]], int]:
    """About ``n`` trajectories: (tasks, group size) over the mixed tasks."""
    mixed = mixed_tasks()
    group = max(1, math.ceil(n / len(mixed)))
    return mixed[: max(1, n // group)], group


class Row:
    """Times one collection: wall, CPU of this process and of pool workers, when each record arrived."""

    def __init__(self, pool: ProcessWorkers | None = None) -> None:
        self.pool = pool
        self.done: list[float] = []

    async def cpu(self) -> tuple[float, float]:
        workers = sum(await self.pool.cpu_seconds()) if self.pool is not None else 0.0
        return time.process_time(), workers

    def arrived(self, record: TrajectoryRecord) -> None:
        self.done.append(time.perf_counter())

    async def __aenter__(self) -> Row:
        self.load = os.getloadavg()[0]
        self.cpu0 = await self.cpu()
        self.t0 = time.perf_counter()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        driver, workers = await self.cpu()
        self.driver_s = driver - self.cpu0[0]
        self.cpu_s = self.driver_s + workers - self.cpu0[1]

    def steady(self, concurrency: int) -> float:
        """Trajectories/s between the first ``concurrency`` completions and the last job's start.

        Before, the first wave ramps up; after, fewer than ``concurrency`` remain in flight (the
        drain): a long-running collector spends almost all its time in between.
        """
        first, last = concurrency, len(self.done) - concurrency
        if concurrency <= 1 or last - first < concurrency:
            return len(self.done) / self.wall
        return (last - first) / (self.done[last - 1] - self.done[first - 1])


Rates = tuple[float, float, float]
"""Trajectories/s over the whole row, in its steady state, and image calls per trajectory."""


def show(label: str, row: Row, records: list[TrajectoryRecord], concurrency: int) -> Rates:
    n = len(records)
    images = sum(1 for r in records for c in r.tool_calls if c.name in IMAGE_TOOLS) / n
    rate, steady = n / row.wall, row.steady(concurrency)
    print(
        f"  {label:<26} {n:>5} {row.wall:>7.2f} {rate:>8.2f} {steady:>8.2f} {row.cpu_s:>7.2f} {row.driver_s:>7.2f} "
        f"{1000 * row.cpu_s / n:>7.1f} {row.cpu_s / row.wall:>5.2f} {images:>6.2f} {row.load:>6.2f}"
    )
    return rate, steady, images


def header() -> None:
    print(f"  {'row':<26} {'traj':>5} {'wall s':>7} {'traj/s':>8} {'steady/s':>8} {'cpu s':>7} {'driver':>7} "
          f"{'cpu ms':>7} {'cores':>5} {'img/t':>6} {'load1':>6}")  # fmt: skip


def config(store: Path, concurrency: int, group: int, latency: float, args: argparse.Namespace) -> CollectConfig:
    return CollectConfig(
        group_size=group, concurrency=concurrency, store=store, fault_rate=args.fault_rate, seed=args.seed,
        tool_latency_s=latency,
    )  # fmt: skip


async def single(tasks: list[dict[str, Any]], cfg: CollectConfig, label: str) -> Rates:
    async with synthetic_tools(cfg) as tools, Row() as row:
        records = await collect(tasks, policy=expert_policy(), tools=tools, config=cfg, on_record=row.arrived)
    return show(label, row, records, cfg.concurrency)


async def pooled(tasks: list[dict[str, Any]], cfg: CollectConfig, args: argparse.Namespace, label: str) -> Rates:
    settings = PoolSettings(workers=args.workers, profile_dir=args.profile)
    opened = time.perf_counter()
    async with ProcessWorkers(PolicySpec(), cfg, settings=settings) as pool:
        started = time.perf_counter() - opened
        warm = await pool.collect(tasks[: 2 * args.workers])  # warm-up: every worker's first trajectories
        async with Row(pool) as row:
            records = await pool.collect(tasks, on_record=row.arrived)
    PROFILED[0] += len(warm) + len(records)
    rate = show(label, row, records, cfg.concurrency)
    print(f"  {'':<26} (pool of {args.workers} started in {started:.2f} s, not timed)")
    return rate


async def io_bound(store: Path, latency: float, args: argparse.Namespace) -> None:
    print(f"\nI/O-bound back end: {latency} s per image call; {args.concurrency} in flight")
    header()
    tasks, group = workload(args.concurrency * args.waves)
    c = args.concurrency
    # One at a time: the first 2 samples of every few tasks (an odd step: single and multi alternate).
    # A group shares its image-call seeds, so a trajectory's length depends mostly on its task: the
    # sample spans tasks. Its img/t against the scaled rows' shows how alike the mixes are.
    count = max(1, args.solo // 2)
    solo = tasks[:: max(1, len(tasks) // count) | 1][:count]
    rate1, _, images1 = await single(solo, config(store, 1, 2, latency, args), "single loop, 1 in flight")
    rows: dict[str, Rates] = {}
    if not args.no_single_64:
        rows["single loop"] = await single(tasks, config(store, c, group, latency, args), f"single loop, {c} in flight")
    label = f"pool x{args.workers}"
    rows[label] = await pooled(tasks, config(store, c, group, latency, args), args, f"{label}, {c} in flight")
    for name, (whole, steady, images) in rows.items():
        print(
            f"  efficiency at {c} in flight, latency {latency} s, {name}: {steady / (c * rate1):.2f} steady "
            f"state, {whole / (c * rate1):.2f} whole run with ramp-up and drain (goal 0.90)"
        )
        per_image = steady * images / (c * rate1 * images1)
        print(f"    in image calls/s (corrects for the 1-in-flight row's mix): {per_image:.2f} steady state")


async def cpu_bound(store: Path, args: argparse.Namespace) -> None:
    c = args.cpu_concurrency
    print(f"\nCPU-bound back end (latency 0); {c} in flight")
    header()
    tasks, group = workload(args.cpu_trajectories)
    one, _, _ = await single(tasks, config(store, c, group, 0.0, args), "1 process")
    many, _, _ = await pooled(tasks, config(store, c, group, 0.0, args), args, f"pool x{args.workers}")
    print(f"  speed-up of the pool of {args.workers} over 1 process: {many / one:.2f}x (goal 1.80x on 2 cores)")


AREAS = (
    ("visioncreator/tool_servers", "tool servers (ours)"),
    ("visioncreator/graph", "graph (ours)"),
    ("visioncreator/policy", "policy (ours)"),
    ("visioncreator/rl", "rl collection (ours)"),
    ("visioncreator/evals", "evals (ours)"),
    ("langgraph", "langgraph"),
    ("langchain_core", "langchain_core"),
    ("/mcp/", "mcp"),
    ("jsonschema", "jsonschema"),
    ("pydantic", "pydantic"),
    ("anyio", "anyio"),
    ("PIL", "PIL"),
    ("asyncio", "asyncio"),
    ("sqlite", "sqlite"),
)


def _area(file: str) -> str | None:
    return next((name for key, name in AREAS if key in file), None)


def profile_report(folder: Path, top: int, trajectories: int) -> None:
    """Where a worker's event-loop thread spends CPU: by area (a C function counts for its caller), then by function."""
    dumps = sorted(str(p) for p in folder.glob("worker*.prof"))
    if not dumps:
        return
    stats: Any = pstats.Stats(*dumps)
    total = stats.total_tt
    areas: dict[str, float] = {}
    for (file, _, _), (_, _, own, _, callers) in stats.stats.items():
        area = _area(file)
        if area is not None or not callers:
            areas[area or "other"] = areas.get(area or "other", 0.0) + own
            continue
        for (caller_file, _, _), (_, _, edge_own, _) in callers.items():  # a builtin: charge each caller's area
            name = _area(caller_file) or "other"
            areas[name] = areas.get(name, 0.0) + edge_own
    print(f"\nworker profile: {len(dumps)} workers, {total:.2f} s of event-loop-thread CPU, "
          f"{1000 * total / trajectories:.1f} ms per trajectory (all profiled rows; cProfile inflates it)")  # fmt: skip
    for name, own in sorted(areas.items(), key=lambda kv: kv[1], reverse=True):
        print(f"  {100 * own / total:5.1f}%  {name}")
    print(f"top {top} functions by own time:")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)
    for (file, line, name), (_, _, own, cum, _) in rows[:top]:
        print(f"  {100 * own / total:5.1f}%  cum {100 * cum / total:5.1f}%  {name}  {file}:{line}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--latencies", type=float, nargs="*", default=[0.1, 1.0], help="I/O-bound back ends (s)")
    parser.add_argument("--concurrency", type=int, default=64, help="trajectories in flight in the scaled rows")
    parser.add_argument("--waves", type=int, default=5, help="scaled rows collect concurrency x waves trajectories")
    parser.add_argument("--solo", type=int, default=16, help="about this many trajectories in the 1-in-flight row")
    parser.add_argument("--workers", type=int, default=2, help="pool worker processes")
    parser.add_argument("--cpu-concurrency", type=int, default=16, help="in flight in the CPU-bound rows")
    parser.add_argument("--cpu-trajectories", type=int, default=160, help="trajectories of each CPU-bound row")
    parser.add_argument("--no-cpu-bound", action="store_true", help="skip the CPU-bound rows")
    parser.add_argument("--no-single-64", action="store_true", help="skip the single loop's scaled rows")
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=Path, help="write and summarise pool workers' cProfile stats here")
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args()
    print(f"rollout scaling: expert policy, synthetic tools, fault rate {args.fault_rate}; {os.cpu_count()} CPUs")
    print(f"load average before the run (1, 5, 15 min): {os.getloadavg()} (a shared machine: other work runs too)")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        warm, group = workload(4)
        await single(warm, config(store, 4, group, 0.0, args), "warm-up (not a result)")
        if not args.no_cpu_bound:
            await cpu_bound(store, args)
        for latency in args.latencies:
            await io_bound(store, latency, args)
    if args.profile is not None:
        profile_report(args.profile, args.profile_top, PROFILED[0])
    print(f"\nload average after the run: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
