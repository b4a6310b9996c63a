"""The agent on the built-in synthetic suite, with faults injected: reflection on vs off.

Usage: python benchmarks/agent_suite.py [--fault-rate 0.3] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from visioncreator.evals import EvalSettings, TaskResult, run_eval
from visioncreator.evals.results import read_results
from visioncreator.graph import AgentConfig


def table(name: str, scores: list[TaskResult], seconds: float) -> None:
    groups: dict[str, list[TaskResult]] = defaultdict(list)
    for s in scores:
        groups[s.split].append(s)
        groups["all"].append(s)
    print(f"\n== {name} ({seconds:.1f} s)")
    print(
        f"{'split':<8} {'tasks':>5} {'success':>8} {'checklist':>9} {'calls/task':>10} "
        f"{'faults':>6} {'caught':>6} {'faulty answers':>14}"
    )
    for split, group in groups.items():
        n = len(group)
        print(
            f"{split:<8} {n:>5} {sum(s.success for s in group) / n:>8.1%} "
            f"{sum(s.checklist_score for s in group) / n:>9.3f} "
            f"{sum(s.cost.tool_calls for s in group) / n:>10.2f} {sum(s.faults_injected for s in group):>6} "
            f"{sum(s.faults_caught for s in group):>6} {sum(s.faulty_answers for s in group):>14}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"built-in synthetic suite; fault rate {args.fault_rate}; calls/task counts every tool call")
    with tempfile.TemporaryDirectory() as tmp:
        for name, reflect in (("expert, reflection on", True), ("expert, reflection off", False)):
            settings = EvalSettings(
                out=Path(tmp) / name.replace(" ", "_").replace(",", ""),
                fault_rate=args.fault_rate,
                agent=AgentConfig(reflect=reflect),
                concurrency=args.concurrency,
                seed=args.seed,
            )
            started = time.perf_counter()
            await run_eval(settings)
            table(name, read_results(settings.out), time.perf_counter() - started)


if __name__ == "__main__":
    asyncio.run(main())
