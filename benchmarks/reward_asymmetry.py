"""Reward asymmetry: how much of a GRPO group's reward variance the tools' randomness explains.

Method. For each task (``--tasks`` built-in suite tasks per split, ``single`` and ``multi``) a
group of P x T trajectories is collected with :func:`visioncreator.rl.collect`:

* P policy seeds: the run seed ``p`` (sample ``p`` of a collection). The policy is the scripted
  expert with error rates (bad plans, skipped reflections, accepted faults, over-reflection);
  every one of its random draws derives from the run seed, so the seed is the policy's randomness.
* T tool seeds: the synthetic tool server's ``tool_seed`` ``t`` (one in-process server per ``t``),
  mixed into every layout and fault draw (faults at ``--fault-rate``). With ``p`` fixed and ``t``
  varied, the policy's own draws are the same and only what the tools return differs (the
  policy then reacts to it, as it would in real training).

For each reward R (plan, reflection, outcome, total) and each task, with ``R[p, t]``:

* total group variance ``V = Var_{p,t} R`` (population variance over the P x T samples);
* tool-driven variance ``W = mean_p Var_t R[p, :]`` (spread left when the policy seed is fixed);
* by the law of total variance ``V = W + Var_p(mean_t R[p, :])``: the rest is policy-driven.

Printed per split and reward: mean V over tasks, mean W, the fraction W / V (mean W over mean V,
so tasks with zero variance weigh nothing), and how many groups had zero variance (no GRPO
signal). With T samples, ``Var_p`` of the means still holds ``W / T`` of tool noise, so the policy
share is slightly overstated. The paper's finding to compare with: reflection variance mostly
tool-driven, plan variance mostly policy-driven.

Usage: PYTHONPATH=. python benchmarks/reward_asymmetry.py [--tasks 10] [--policy-seeds 4] [--tool-seeds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from visioncreator.graph import expert_policy
from visioncreator.policy import ExpertConfig
from visioncreator.rl import CollectConfig, TrajectoryRecord, collect
from visioncreator.rl.collection import synthetic_tools

REWARDS = ("plan", "reflection", "outcome", "total")


def suite_tasks(split: str, n: int) -> list[dict[str, Any]]:
    lines = files("visioncreator.evals").joinpath("data", "synthetic.jsonl").read_text().splitlines()
    return [t for t in (json.loads(line) for line in lines if line.strip()) if t["split"] == split][:n]


def variances(grid: list[list[float]]) -> tuple[float, float]:
    """(total variance over all cells, mean over rows of the variance within a row)."""
    cells = [v for row in grid for v in row]
    return statistics.pvariance(cells), statistics.fmean(statistics.pvariance(row) for row in grid)


async def collect_grid(tasks: list[dict[str, Any]], store: Path, args: argparse.Namespace) -> list[TrajectoryRecord]:
    expert = ExpertConfig(
        bad_plan_rate=0.3, skip_reflection_rate=0.3, accept_faulty_rate=0.3, over_reflect_rate=0.2, seed=0
    )
    records: list[TrajectoryRecord] = []
    for t in range(args.tool_seeds):
        config = CollectConfig(
            group_size=args.policy_seeds, concurrency=args.concurrency, seed=0, tool_seed=t,
            fault_rate=args.fault_rate, store=store,
        )  # fmt: skip
        async with synthetic_tools(config) as tools:
            records += await collect(tasks, policy=expert_policy(expert), tools=tools, config=config)
    return records


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10, help="tasks per split")
    parser.add_argument("--policy-seeds", type=int, default=4)
    parser.add_argument("--tool-seeds", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(
        f"reward asymmetry: expert with errors (bad_plan 0.3, skip_reflection 0.3, accept_faulty 0.3, "
        f"over_reflect 0.2), faults {args.fault_rate}; groups of {args.policy_seeds} policy seeds x "
        f"{args.tool_seeds} tool seeds per task"
    )
    print(
        f"{'split':<7} {'reward':<11} {'tasks':>5} {'var total':>10} {'var tools':>10} {'tool share':>10} {'flat':>5}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("single", "multi"):
            tasks = suite_tasks(split, args.tasks)
            started = time.perf_counter()
            records = await collect_grid(tasks, Path(tmp) / "store", args)
            wall = time.perf_counter() - started
            for reward in REWARDS:
                totals, withins, flat = [], [], 0
                for task in tasks:
                    grid = [[0.0] * args.tool_seeds for _ in range(args.policy_seeds)]
                    for r in records:
                        if r.task_id == task["id"]:
                            grid[r.sample_index][r.tool_seed] = r.rewards[reward]
                    total, within = variances(grid)
                    totals.append(total)
                    withins.append(within)
                    flat += total == 0.0
                mean_total, mean_within = statistics.fmean(totals), statistics.fmean(withins)
                share = mean_within / mean_total if mean_total else float("nan")
                print(
                    f"{split:<7} {reward:<11} {len(tasks):>5} {mean_total:>10.5f} {mean_within:>10.5f} "
                    f"{share:>10.2f} {flat:>5}"
                )
            print(f"  ({split}: {len(records)} trajectories in {wall:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
