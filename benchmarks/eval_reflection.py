"""Reflection measured: the expert with reflection, without it, and told to over-reflect.

On the built-in synthetic suite with faults injected (30% by default), per split: success rate,
checklist score, tool calls per task (every call: the policy's and the graph's inspections), and
the reflection distribution (good / under / over verdicts; images nobody reflected on apart).
Each configuration is a run folder with its report (summary.json, report.html) under --out.

The expert reflects on ``inspect_image`` reports, which the synthetic server makes through an
observer that can be wrong (missed objects, count errors, colour confusions, OCR errors): by
default at the server's default rates; ``--exact-perception`` sets them all to 0 (the ground
truth), and ``--observe-*-rate`` sets each one.

Usage: python benchmarks/eval_reflection.py [--out DIR] [--fault-rate 0.3] [--over-reflect 0.5] [--limit N]
       [--exact-perception | --observe-miss-rate R --observe-count-rate R --observe-color-rate R --observe-ocr-rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from visioncreator.evals import EvalSettings, TaskResult, reflection_distribution, run_eval, write_report
from visioncreator.evals.results import read_results
from visioncreator.graph import AgentConfig
from visioncreator.policy import ExpertConfig
from visioncreator.tool_servers.synthetic import ObserverSettings

SPLITS = ("single", "multi", "img2img", "all")


@dataclass(frozen=True, kw_only=True)
def observer_from(args: argparse.Namespace) -> ObserverSettings:
    """The observer the flags ask for: exact, or the defaults with any rate given replaced."""
    if args.exact_perception:
        return ObserverSettings.exact()
    given = {name: getattr(args, f"observe_{name}") for name in ("miss_rate", "count_rate", "color_rate", "ocr_rate")}
    return dataclasses.replace(ObserverSettings(), **{k: v for k, v in given.items() if v is not None})


def table(name: str, results: list[TaskResult], seconds: float, folder: Path) -> None:
    dist = reflection_distribution(results)
    print(f"\n== {name}: {len(results)} tasks in {seconds:.1f} s; report {folder / 'report.html'}")
    print(
        f"{'split':<8} {'tasks':>5} {'success':>8} {'checklist':>9} {'calls/task':>10} "
        f"{'good':>5} {'under':>5} {'over':>5} {'unrefl.':>7} {'faulty answers':>14}"
    )
    for split in SPLITS:
        group = [r for r in results if split in ("all", r.split)]
        if not group:
            continue
        n = len(group)
        d = dist[split]
        print(
            f"{split:<8} {n:>5} {sum(r.success for r in group) / n:>8.1%} "
            f"{sum(r.checklist_score for r in group) / n:>9.3f} {sum(r.cost.tool_calls for r in group) / n:>10.2f} "
            f"{d.good:>5} {d.under:>5} {d.over:>5} {d.unreflected:>7} {sum(r.faulty_answers for r in group):>14}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, help="Folder for the three run folders (default: a temporary one).")
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--over-reflect", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exact-perception", action="store_true", help="inspect_image reports the ground truth")
    for name in ("miss", "count", "color", "ocr"):
        parser.add_argument(f"--observe-{name}-rate", type=float, help=f"observer {name} rate (server default)")
    args = parser.parse_args()
    observer = observer_from(args)
    configs = {
        "reflect": (AgentConfig(reflect=True), ExpertConfig()),
        "no-reflect": (AgentConfig(reflect=False), ExpertConfig()),
        "over-reflect": (AgentConfig(reflect=True), ExpertConfig(over_reflect_rate=args.over_reflect)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        print(f"built-in synthetic suite; fault rate {args.fault_rate}; over-reflect rate {args.over_reflect}")
        print(f"perception: {'exact' if observer.is_exact else observer}")
        for name, (agent, expert) in configs.items():
            settings = EvalSettings(
                out=root / name, fault_rate=args.fault_rate, observer=observer, agent=agent, expert=expert,
                seed=args.seed, concurrency=args.concurrency, limit=args.limit, label=f"expert, {name}",
            )  # fmt: skip
            started = time.perf_counter()
            await run_eval(settings)
            seconds = time.perf_counter() - started
            write_report(settings.out)
            table(f"expert, {name}", read_results(settings.out), seconds, settings.out)


if __name__ == "__main__":
    asyncio.run(main())
