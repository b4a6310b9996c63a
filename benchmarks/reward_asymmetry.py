"""Reward asymmetry: how much of a GRPO group's reward variance the tools' randomness explains.

Method. For each task (``--tasks`` built-in suite tasks per split, ``single`` and ``multi``) a grid
of P x T trajectories is collected with :func:`visioncreator.rl.collect`:

* P policy seeds: the run seed ``p`` (sample ``p`` of a collection). The policy is the scripted
  expert with error rates (bad plans, skipped reflections, accepted faults, over-reflection);
  every one of its random draws derives from the run seed, so the seed is the policy's randomness.
* T tool realisations: the synthetic tool server's ``tool_seed`` ``t`` (one in-process server per
  ``t``), mixed into every layout and fault draw (faults at ``--fault-rate``). Column ``t`` is one
  GRPO group: the P members that ran against the same server.

The image calls' seeds (``CollectConfig.call_seeds``) decide what the members of a group share:

* ``independent`` (the old way): each member's calls have seeds of their own, so members meet
  different faults: the tool randomness differs inside a group;
* ``shared`` (common random numbers): the members' calls share seeds (task, group, plan step,
  attempt), so every member meets the same first-image faults, and a redo draws a new image.

For each reward R (plan, reflection, outcome, total), each task and each group ``t``:

* ``var group``: the variance of R among the group's members (the spread GRPO normalises its
  advantages by), the mean over groups and tasks;
* ``var tools``: the same, in a second collection whose members all share one policy seed (the
  expert's draws are then identical; only what the tools hand each member can differ): the spread
  inside a group that the dice alone make;
* ``tool share = var tools / var group``: how much of the advantage measures the dice, not the
  policy. ``flat`` counts groups with zero variance (no GRPO signal).

The paper's finding to compare with: reflection variance mostly tool-driven. With shared call seeds
a group's members meet the same images as long as they call the same tools with the same prompts,
so the tool share should fall toward 0.

Usage: PYTHONPATH=. python benchmarks/reward_asymmetry.py [--tasks 10] [--policy-seeds 4] [--tool-seeds 4]
    [--call-seeds independent shared] [--exact-perception]
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
from visioncreator.policy import ExpertConfig, PolicyRequest, PolicyTurn
from visioncreator.rl import CollectConfig, TrajectoryRecord, collect
from visioncreator.rl.collection import synthetic_tools

REWARDS = ("plan", "reflection", "outcome", "total")


def suite_tasks(split: str, n: int) -> list[dict[str, Any]]:
    lines = files("visioncreator.evals").joinpath("data", "synthetic.jsonl").read_text().splitlines()
    return [t for t in (json.loads(line) for line in lines if line.strip()) if t["split"] == split][:n]


def perception(args: argparse.Namespace) -> dict[str, float]:
    """The observer rates of the synthetic server: 0 with --exact-perception, else its defaults."""
    if not args.exact_perception:
        return {}
    return dict.fromkeys(("observe_miss_rate", "observe_count_rate", "observe_color_rate", "observe_ocr_rate"), 0.0)


class OnePolicySeed:
    """The expert with every member's run seed replaced by one: members differ only in their tools."""

    name = "expert"

    def __init__(self, config: ExpertConfig) -> None:
        self.config = config
        self.inner = expert_policy(config)

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        return await self.inner.respond(request.model_copy(update={"seed": 0}))


def group_variances(records: list[TrajectoryRecord], task_id: str, reward: str) -> list[float]:
    """The variance of ``reward`` inside each group (server tool seed) of one task."""
    groups: dict[int, list[float]] = {}
    for r in records:
        if r.task_id == task_id:
            groups.setdefault(r.tool_seed, []).append(r.rewards[reward])
    return [statistics.pvariance(values) for values in groups.values()]


EXPERT = ExpertConfig(bad_plan_rate=0.3, skip_reflection_rate=0.3, accept_faulty_rate=0.3, over_reflect_rate=0.2)


async def collect_grid(
    tasks: list[dict[str, Any]], store: Path, args: argparse.Namespace, call_seeds: str, one_policy_seed: bool
) -> list[TrajectoryRecord]:
    policy = OnePolicySeed(EXPERT) if one_policy_seed else expert_policy(EXPERT)
    records: list[TrajectoryRecord] = []
    for t in range(args.tool_seeds):
        config = CollectConfig(
            group_size=args.policy_seeds, concurrency=args.concurrency, seed=0, tool_seed=t,
            fault_rate=args.fault_rate, store=store, call_seeds=call_seeds, **perception(args),
        )  # fmt: skip
        async with synthetic_tools(config) as tools:
            records += await collect(tasks, policy=policy, tools=tools, config=config)
    return records


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10, help="tasks per split")
    parser.add_argument("--policy-seeds", type=int, default=4)
    parser.add_argument("--tool-seeds", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--exact-perception", action="store_true", help="inspect_image reports the ground truth (observer noise off)"
    )
    parser.add_argument("--call-seeds", nargs="+", default=["independent", "shared"], choices=["independent", "shared"])
    args = parser.parse_args()
    print(
        f"reward asymmetry: expert with errors (bad_plan 0.3, skip_reflection 0.3, accept_faulty 0.3, "
        f"over_reflect 0.2), faults {args.fault_rate}; groups of {args.policy_seeds} policy seeds, "
        f"{args.tool_seeds} groups per task; perception {'exact' if args.exact_perception else 'noisy (defaults)'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.call_seeds:
            print(f"\ncall seeds: {mode}")
            header = ("split", "reward", "tasks", "var group", "var tools", "tool share", "flat")
            print("{:<7} {:<11} {:>5} {:>10} {:>10} {:>10} {:>5}".format(*header))
            for split in ("single", "multi"):
                await report(split, mode, Path(tmp) / "store", args)


async def report(split: str, mode: str, store: Path, args: argparse.Namespace) -> None:
    tasks = suite_tasks(split, args.tasks)
    started = time.perf_counter()
    records = await collect_grid(tasks, store, args, mode, one_policy_seed=False)
    fixed = await collect_grid(tasks, store, args, mode, one_policy_seed=True)
    wall = time.perf_counter() - started
    for reward in REWARDS:
        group = [v for t in tasks for v in group_variances(records, t["id"], reward)]
        tools = [v for t in tasks for v in group_variances(fixed, t["id"], reward)]
        mean_group, mean_tools = statistics.fmean(group), statistics.fmean(tools)
        share = mean_tools / mean_group if mean_group else float("nan")
        flat = sum(v == 0.0 for v in group)
        print(
            f"{split:<7} {reward:<11} {len(tasks):>5} {mean_group:>10.5f} {mean_tools:>10.5f} {share:>10.2f} {flat:>5}"
        )
    print(f"  ({split}: {len(records) + len(fixed)} trajectories in {wall:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
