"""Collector throughput: trajectories per second with the expert and the synthetic tools, in process and on Ray.

Each row collects the same trajectories (``--tasks`` built-in suite tasks, single and multi
alternating, x ``--group-size`` samples), faults at ``--fault-rate``, rewards scored, no
checkpointer, records in memory. Warm-up runs first so imports and caches do not count.

- In-process rows (``--concurrency``): :func:`visioncreator.rl.collect` on an in-process
  synthetic tool server (in-memory MCP transport: no subprocess, no sockets). Everything runs on
  one event loop, so on a CPU-bound expert the ceiling is one core: speed-up comes only from
  overlapping the graph's awaits.
- Ray rows (``--ray-workers``): :class:`visioncreator.rl.collection.RayWorkers` on a local Ray
  cluster of ``--ray-cpus`` CPUs, each worker an actor with its own expert and tool server and
  ``--ray-concurrency`` trajectories in flight. Ray start-up (``ray.init``) and the workers'
  start-up are printed apart from the timed collection; the driver (this process) receives and
  unpickles every record.

Printed per row: wall seconds, trajectories/s, speed-up over the in-process concurrency-1 row,
efficiency per slot ``speed-up / (workers x concurrency)``, efficiency per CPU ``speed-up / CPUs``
(1 in process, one per Ray worker), CPU seconds used (this process plus the Ray workers) and
``cores`` = cpu s / wall s, the CPU the row actually got, and the 1-minute load average when the
row started: the machine is shared, so read figures against those two.

Usage: PYTHONPATH=. python benchmarks/collector_throughput.py [--concurrency 1 16 64] [--ray-workers 1 2]
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

from visioncreator.graph import expert_policy
from visioncreator.rl import CollectConfig, collect
from visioncreator.rl.collection import PolicySpec, RayWorkers, ensure_ray, synthetic_tools


def suite_tasks(n: int) -> list[dict[str, Any]]:
    lines = files("visioncreator.evals").joinpath("data", "synthetic.jsonl").read_text().splitlines()
    tasks = [json.loads(line) for line in lines if line.strip()]
    singles = [t for t in tasks if t["split"] == "single"]
    multis = [t for t in tasks if t["split"] == "multi"]
    mixed = [t for pair in zip(singles, multis, strict=False) for t in pair]
    return mixed[:n]


def make_config(store: Path, concurrency: int, args: argparse.Namespace) -> CollectConfig:
    return CollectConfig(
        group_size=args.group_size, concurrency=concurrency, store=store, fault_rate=args.fault_rate, seed=args.seed
    )


async def in_process(tasks: list[dict[str, Any]], config: CollectConfig) -> int:
    async with synthetic_tools(config) as tools:
        return len(await collect(tasks, policy=expert_policy(), tools=tools, config=config))


def load1() -> float:
    return os.getloadavg()[0]


class Table:
    """Prints rows against the in-process concurrency-1 throughput."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.base: float | None = None
        head = ("path", "workers", "conc", "traj", "start s", "wall s", "cpu s", "cores", "traj/s", "speed-up")
        print(("{:<10} {:>7} {:>5} {:>5} {:>8} {:>7} {:>6} {:>5} {:>7} {:>9} {:>8} {:>8} {:>6}").format(
            *head, "eff/slot", "eff/CPU", "load1"))  # fmt: skip

    def row(
        self, path: str, workers: int, conc: int, start: float | None, wall: float, cpu: float, load: float
    ) -> None:
        rate = self.n / wall
        if self.base is None and path == "in-process" and conc == 1:
            self.base = rate
        speedup = rate / self.base if self.base else float("nan")
        started = f"{start:.2f}" if start is not None else "-"
        print(
            f"{path:<10} {workers:>7} {conc:>5} {self.n:>5} {started:>8} {wall:>7.2f} {cpu:>6.2f} {cpu / wall:>5.2f} "
            f"{rate:>7.2f} "
            f"{speedup:>8.2f}x {speedup / (workers * conc):>8.3f} {speedup / workers:>8.3f} {load:>6.2f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64], help="in-process levels")
    parser.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2], help="Ray rows (empty: none)")
    parser.add_argument("--ray-concurrency", type=int, default=16, help="trajectories in flight per Ray worker")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tasks = suite_tasks(args.tasks)
    n = len(tasks) * args.group_size
    print(f"collector throughput: expert policy, synthetic tools, fault rate {args.fault_rate}")
    print(f"{n} trajectories per row ({len(tasks)} tasks x group {args.group_size}); {os.cpu_count()} CPUs")
    print(f"load average before the run (1, 5, 15 min): {os.getloadavg()} (a shared machine: other work runs too)")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        await in_process(tasks[:2], make_config(store, 2, args))  # warm-up
        table = Table(n)
        for c in args.concurrency:
            load, cpu, started = load1(), time.process_time(), time.perf_counter()
            assert await in_process(tasks, make_config(store, c, args)) == n
            table.row("in-process", 1, c, None, time.perf_counter() - started, time.process_time() - cpu, load)
        if not args.ray_workers:
            return
        import ray

        started = time.perf_counter()
        ensure_ray("local", num_cpus=args.ray_cpus)
        print(f"ray.init (local cluster, {args.ray_cpus} CPUs): {time.perf_counter() - started:.2f} s, not timed below")
        rates: dict[int, float] = {}
        try:
            for workers in args.ray_workers:
                config = make_config(store, args.ray_concurrency, args)
                opened = time.perf_counter()
                async with RayWorkers(PolicySpec(), config, workers=workers) as pool:
                    start = time.perf_counter() - opened  # actors up, policy and tool server built
                    await pool.collect(tasks[: 2 * workers])  # warm-up: every worker's first trajectories
                    load, cpu, began = load1(), time.process_time() + sum(await pool.cpu_seconds()), time.perf_counter()
                    assert len(await pool.collect(tasks)) == n
                    wall = time.perf_counter() - began
                    cpu = time.process_time() + sum(await pool.cpu_seconds()) - cpu
                table.row("ray", workers, args.ray_concurrency, start, wall, cpu, load)
                rates[workers] = n / wall
        finally:
            ray.shutdown()
        least = min(rates)
        for workers, rate in rates.items():
            if workers != least:
                scale = rate / rates[least]
                per = scale * least / workers
                print(f"ray scale-out {least} -> {workers} workers: {scale:.2f}x, {per:.3f} per worker")
    print(f"load average after the run: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
