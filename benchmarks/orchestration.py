"""Orchestration overhead of the agent on the offline default.

Runs the built-in suite (faults at 30%) one task at a time through the real stack: the
compiled graph with a SQLite checkpointer, the expert policy, the synthetic tool server in a
subprocess over stdio, the content-addressed store. For every agent step (one policy turn and
everything until the next one: graph transitions, checkpoints, MCP round trips, store reads
and writes, the graph's own inspections) it subtracts the time spent inside the policy and
inside the image back end (as the server reports it), and prints the median and p95 of what
is left. It also prints, per tool call, the MCP round trip minus the back-end time, and per
task the ratio of wall time to policy + back-end time.

Usage: python benchmarks/orchestration.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from visioncreator.evals import load_suite, materialize_input
from visioncreator.graph import (
    ToolClient,
    ToolServerSpec,
    Trajectory,
    build_agent,
    expert_policy,
    open_checkpointer,
    run_task,
)
from visioncreator.policy import Task
from visioncreator.tool_servers import ImageStore


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def step_overheads(trajectory: Trajectory, ended: float) -> tuple[list[float], float, float]:
    """Per-step overheads (s), and the task's policy and back-end seconds."""
    turns = sorted(trajectory.turns, key=lambda t: t.index)
    calls = trajectory.tool_calls
    starts = [t.started_at for t in turns] + [ended]
    overheads = []
    for k, turn in enumerate(turns):
        lo, hi = starts[k], starts[k + 1]
        backend = sum(float((c.result or {}).get("generator_s", 0.0)) for c in calls if lo <= c.started_at < hi)
        overheads.append(hi - lo - turn.latency_s - backend)
    policy = sum(t.latency_s for t in turns)
    backend = sum(float((c.result or {}).get("generator_s", 0.0)) for c in calls)
    return overheads, policy, backend


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    args = parser.parse_args()
    tasks = load_suite()
    steps: list[float] = []
    round_trips: list[float] = []
    ratios: list[float] = []
    wall_total = inside_total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "store"
        store = ImageStore(store_dir)
        spec = ToolServerSpec.synthetic(store=str(store_dir), fault_rate=args.fault_rate)
        async with ToolClient(spec=spec) as tools, open_checkpointer(Path(tmp) / "cp.sqlite") as saver:
            agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
            for seed in range(args.seeds):
                for suite_task in tasks:
                    # The built-in suite's inputs are prompts (rendered, no file), so the folder is unused.
                    inputs = [(await materialize_input(store, image, Path.cwd()))[0] for image in suite_task.inputs]
                    task = Task(request=suite_task.request, n_images=suite_task.n_images, split=suite_task.split,
                                inputs=tuple(inputs))  # fmt: skip
                    started = time.time()
                    result = await run_task(agent, task, seed=seed, thread_id=f"{suite_task.id}-{seed}")
                    ended = time.time()
                    overheads, policy, backend = step_overheads(result.trajectory, ended)
                    steps += overheads
                    wall = ended - started
                    ratios.append(wall / (policy + backend))
                    wall_total += wall
                    inside_total += policy + backend
                    round_trips += [
                        c.latency_s - float((c.result or {}).get("generator_s", 0.0))
                        for c in result.trajectory.tool_calls
                        if c.ok
                    ]
    ms = 1000.0
    print(f"tasks: {len(tasks) * args.seeds}  agent steps: {len(steps)}  tool calls: {len(round_trips)}")
    print(
        f"per agent step, overhead outside policy and back end: median {statistics.median(steps) * ms:.1f} ms, "
        f"p95 {pct(steps, 0.95) * ms:.1f} ms"
    )
    print(
        f"per tool call, MCP stdio round trip + store minus back end: median "
        f"{statistics.median(round_trips) * ms:.1f} ms, p95 {pct(round_trips, 0.95) * ms:.1f} ms"
    )
    print(
        f"whole-task wall / (policy + back end): median {statistics.median(ratios):.2f}, "
        f"p95 {pct(ratios, 0.95):.2f}, overall {wall_total / inside_total:.2f} "
        f"({wall_total:.1f} s wall, {inside_total:.1f} s inside)"
    )


if __name__ == "__main__":
    asyncio.run(main())
