"""Trajectories per minute against the real vLLM CPU server, at several concurrencies.

Starts the real vLLM CPU server (``.venv-vllm``) with the tiny random model, then for each
concurrency runs that many tasks at once (and more in waves, ``--waves``) through the graph:
``openai`` back end, turns constrained to our format (plan, one ``text_to_image`` call, accept,
answer: 4 policy turns, 2 tool calls each), in-process synthetic tool server. Every turn's
completion is short and bounded by its regex, so the work per trajectory is fixed; what changes is
how much of it the server batches.

Usage: PYTHONPATH=. python benchmarks/rollout_concurrency.py [--concurrency 1 8 32] [--waves 2] [--min-tasks 8]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from tests.graph.conftest import make_client, run
from tests.vllm.conftest import ConstrainedPolicy, policy_settings, running_server, scrape

from visioncreator.policy import Task


async def level(policy: ConstrainedPolicy, store: Path, concurrency: int, n: int) -> dict[str, float]:
    gate = asyncio.Semaphore(concurrency)
    walls: list[float] = []
    turns = 0

    async with make_client(store) as tools:

        async def one(i: int) -> None:
            nonlocal turns
            async with gate:
                task = Task(request=f"a red fox next to a blue car number {i} at concurrency {concurrency}")
                result = await asyncio.wait_for(run(tools, task, policy=policy, seed=i), 600)
                assert result.state["termination"] == "answered", result.state["termination"]
                walls.append(result.wall_s)
                turns += len(result.state["turns"])

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    return {
        "n": n,
        "elapsed": elapsed,
        "per_min": 60 * n / elapsed,
        "median_s": statistics.median(walls),
        "turns": turns,
    }


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        policy = ConstrainedPolicy(policy_settings(server))
        print(f"vLLM {server.install.version} (CPU build: {server.install.cpu}), model {server.model}")
        await level(policy, Path(tmp) / "store", 1, 1)  # warm: the shared system prompt enters the cache
        print(
            f"{'concurrency':>11} {'trajectories':>12} {'wall s':>7} {'traj/min':>9} {'x c=1':>6} {'median traj s':>14}"
        )
        base = None
        for c in args.concurrency:
            before = scrape(server, "vllm:generation_tokens_total")
            r = await level(policy, Path(tmp) / "store", c, max(c * args.waves, args.min_tasks))
            gen = scrape(server, "vllm:generation_tokens_total")["vllm:generation_tokens_total"]
            gen -= before["vllm:generation_tokens_total"]
            base = base or r["per_min"]
            print(
                f"{c:>11} {r['n']:>12.0f} {r['elapsed']:>7.1f} {r['per_min']:>9.1f} {r['per_min'] / base:>6.2f} "
                f"{r['median_s']:>14.2f}   ({r['turns']:.0f} turns, {gen / r['elapsed']:.0f} generated tokens/s)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--waves", type=int, default=2, help="Tasks per level: concurrency x waves ...")
    parser.add_argument("--min-tasks", type=int, default=8, help="... and at least this many.")
    asyncio.run(main(parser.parse_args()))
