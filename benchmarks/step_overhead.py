"""Per-step cost of the agent against a bare LangGraph loop, and whole tasks against their critical path.

Three measurements, each through the real stack (the compiled graph, the expert policy, the
synthetic tool server spawned over stdio, the content-addressed store, the durable SQLite
checkpointer from ``open_checkpointer``):

1. **Per agent step**: one policy turn and everything until the next one (graph passes,
   checkpoints, MCP round trips, the graph's own inspections), minus the time inside the policy
   and inside the image back end. Median and p95 over the built-in suite, with how many
   checkpointed graph passes (supersteps) and SQLite commits each agent step made; and the same
   with the tool calls' whole round trips taken out too (the graph alone: nodes, LangGraph,
   checkpoints).
2. **A bare LangGraph loop**: a one-node ``StateGraph`` that loops on itself through the same
   checkpointer settings, with a state that grows to about the agent's checkpoint size. Its time
   per pass, times the agent's passes per agent step, is the floor the agent is compared with:
   the ratio is agent step / bare loop of the same number of checkpointed passes (with MCP round
   trips, and the graph alone).
3. **Whole task / critical-path compute** with a back end that takes ``--latencies`` seconds
   per image (the server's ``--latency``), for single and multi tasks. Critical path: the
   policy's time plus, for each batch of parallel tool calls, its slowest call's back-end time
   (generation plus the simulated latency), summed along the trajectory.

Usage: python benchmarks/step_overhead.py [--seeds 2] [--tasks 8] [--latencies 0.1 0.3 1.0]
    [--synchronous NORMAL|FULL] [--durability sync|async|exit]

``--synchronous`` is passed to ``open_checkpointer`` (default: its own default) and
``--durability`` to ``run_task`` (default: LangGraph's, ``async``), in every part alike.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from visioncreator.evals import load_suite
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

MS = 1000.0
CHECKPOINTER: dict[str, Any] = {}
"""Keyword arguments of every ``open_checkpointer`` call (``--synchronous``)."""
RUN: dict[str, Any] = {}
"""Keyword arguments of every run (``--durability``)."""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def backend_s(result: dict[str, Any] | None, latency: float) -> float:
    """Back-end seconds of one call: generation, plus the server's simulated latency when it slept."""
    if not result or "generator_s" not in result:
        return 0.0  # inspect_image: no generation
    generated = float(result["generator_s"])
    # The server sleeps its --latency after timing the generator; count it unless already inside.
    return generated if generated >= latency else generated + latency


def step_overheads(trajectory: Trajectory, ended: float) -> tuple[list[float], list[float]]:
    """Per agent step, wall from one turn's start to the next, minus the policy and then minus either
    the back end (so MCP round trips count) or the tool calls' whole round trips (the graph alone)."""
    turns = sorted(trajectory.turns, key=lambda t: t.index)
    starts = [t.started_at for t in turns] + [ended]
    outside, graph = [], []
    for k, turn in enumerate(turns):
        lo, hi = starts[k], starts[k + 1]
        inside = [c for c in trajectory.tool_calls if lo <= c.started_at < hi]
        backend = sum(backend_s(c.result, 0.0) for c in inside)
        outside.append(hi - lo - turn.latency_s - backend)
        graph.append(hi - lo - turn.latency_s - covered_s([(c.started_at, c.started_at + c.latency_s) for c in inside]))
    return outside, graph


def covered_s(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of ``intervals`` (parallel calls count once)."""
    total, reach = 0.0, float("-inf")
    for lo, hi in sorted(intervals):
        if hi > reach:
            total += hi - max(lo, reach)
            reach = hi
    return total


def critical_path_s(trajectory: Trajectory, latency: float) -> float:
    """Policy time plus the slowest call of each batch of parallel tool calls."""
    slowest: dict[int, float] = defaultdict(float)
    for c in trajectory.tool_calls:
        slowest[c.batch] = max(slowest[c.batch], backend_s(c.result, latency))
    return sum(t.latency_s for t in trajectory.turns) + sum(slowest.values())


def suite_tasks(split: str | None, limit: int | None) -> list[tuple[str, Task]]:
    """The built-in suite's tasks without input images (img2img needs a store to put them in)."""
    out = [
        (t.id, Task(request=t.request, n_images=t.n_images, split=t.split))
        for t in load_suite()
        if not t.inputs and (split is None or t.split == split)
    ]
    return out[:limit] if limit else out


def saved_counts(path: Path) -> tuple[int, int, int]:
    """Checkpoints, commits of pending writes (one per task) and checkpoint bytes in the file."""
    with sqlite3.connect(path) as db:
        checkpoints, size = db.execute("SELECT count(*), sum(length(checkpoint)) FROM checkpoints").fetchone()
        writes = db.execute(
            "SELECT count(*) FROM (SELECT DISTINCT thread_id, checkpoint_id, task_id FROM writes)"
        ).fetchone()[0]
    return int(checkpoints), int(writes), int(size or 0)


async def agent_steps(seeds: int, fault_rate: float, tmp: Path) -> dict[str, float]:
    """Per-step overheads over the suite, with passes and commits per agent step."""
    tasks = suite_tasks(None, None)
    steps: list[float] = []
    graph: list[float] = []
    threads = 0
    spec = ToolServerSpec.synthetic(store=str(tmp / "store"), fault_rate=fault_rate)
    db = tmp / "agent.sqlite"
    async with ToolClient(spec=spec) as tools, open_checkpointer(db, **CHECKPOINTER) as saver:
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
        for seed in range(seeds):
            for task_id, task in tasks:
                result = await run_task(agent, task, seed=seed, thread_id=f"{task_id}-{seed}", **RUN)
                outside, inside = step_overheads(result.trajectory, time.time())
                steps += outside
                graph += inside
                threads += 1
    checkpoints, writes, size = saved_counts(db)
    return {
        "median": statistics.median(steps),
        "mean": statistics.fmean(steps),
        "p95": pct(steps, 0.95),
        "graph_median": statistics.median(graph),
        "graph_p95": pct(graph, 0.95),
        "steps": len(steps),
        "passes_per_step": checkpoints / len(steps),
        "commits_per_step": (checkpoints + writes) / len(steps),
        "passes_per_task": checkpoints / threads,
        "checkpoint_bytes": size / checkpoints,
    }


class BareState(TypedDict):
    log: Annotated[list[str], operator.add]
    n: int


async def bare_loop(passes: int, payload: int, runs: int, tmp: Path) -> float:
    """Median seconds per checkpointed pass of a one-node loop, through ``open_checkpointer``."""

    async def step(state: BareState) -> dict[str, Any]:
        return {"log": ["x" * payload], "n": state["n"] + 1}

    def again(state: BareState) -> str:
        return "step" if state["n"] < passes else END

    graph: StateGraph[BareState] = StateGraph(BareState)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", again, ["step", END])
    per_pass: list[float] = []
    async with open_checkpointer(tmp / "bare.sqlite", **CHECKPOINTER) as saver:
        loop = graph.compile(checkpointer=saver)
        for run in range(runs):
            config: Any = {"configurable": {"thread_id": f"bare-{run}"}, "recursion_limit": passes + 10}
            started = time.perf_counter()
            await loop.ainvoke({"log": [], "n": 0}, config, **RUN)
            per_pass.append((time.perf_counter() - started) / (passes + 1))  # + the input checkpoint
    return statistics.median(per_pass)


async def whole_tasks(latency: float, split: str, limit: int, fault_rate: float, tmp: Path) -> tuple[float, float]:
    """Median and overall wall / critical path of ``split``'s tasks with a back end of ``latency`` s."""
    spec = ToolServerSpec.synthetic(
        store=str(tmp / "store"), fault_rate=fault_rate, extra_args=("--latency", repr(latency))
    )
    ratios: list[float] = []
    wall_total = critical_total = 0.0
    db = tmp / f"whole-{latency}-{split}.sqlite"
    async with ToolClient(spec=spec) as tools, open_checkpointer(db, **CHECKPOINTER) as saver:
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
        for task_id, task in suite_tasks(split, limit):
            started = time.perf_counter()
            result = await run_task(agent, task, seed=0, thread_id=task_id, **RUN)
            wall = time.perf_counter() - started
            critical = critical_path_s(result.trajectory, latency)
            ratios.append(wall / critical)
            wall_total += wall
            critical_total += critical
    return statistics.median(ratios), wall_total / critical_total


async def print_steps(seeds: int, fault_rate: float, bare_runs: int, tmp: Path) -> None:
    """Parts 1 and 2: the agent's steps, and the bare loop of as many checkpointed passes."""
    agent = await agent_steps(seeds, fault_rate, tmp)
    passes = max(1, round(agent["passes_per_task"]))
    # Sized so that the bare loop's mean checkpoint is about the agent's (it grows linearly).
    payload = max(1, int(2 * agent["checkpoint_bytes"] / passes))
    bare = await bare_loop(passes, payload, bare_runs, tmp)
    floor = bare * agent["passes_per_step"]
    print(
        f"per agent step ({int(agent['steps'])} steps), outside policy and back end: "
        f"median {agent['median'] * MS:.2f} ms, mean {agent['mean'] * MS:.2f} ms, p95 {agent['p95'] * MS:.2f} ms"
    )
    print(
        f"  checkpointed passes per agent step {agent['passes_per_step']:.2f}, SQLite commits per agent step "
        f"{agent['commits_per_step']:.2f}, mean checkpoint {agent['checkpoint_bytes']:.0f} B"
    )
    print(
        f"bare LangGraph loop ({passes} passes, {payload} B a pass, same checkpointer): {bare * MS:.3f} ms a pass; "
        f"{floor * MS:.2f} ms for {agent['passes_per_step']:.2f} passes"
    )
    print(
        f"per agent step, graph alone (tool round trips out too): median {agent['graph_median'] * MS:.2f} ms, "
        f"p95 {agent['graph_p95'] * MS:.2f} ms"
    )
    print(
        f"agent step / bare loop of the same passes: {agent['median'] / floor:.2f}x with MCP round trips, "
        f"{agent['graph_median'] / floor:.2f}x graph alone"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2, help="runs of the suite for the per-step figures (0: none)")
    parser.add_argument("--tasks", type=int, default=8, help="tasks per split for the whole-task figures")
    parser.add_argument("--latencies", type=float, nargs="*", default=[0.1, 0.3, 1.0])
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--bare-runs", type=int, default=30)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"])
    parser.add_argument("--durability", choices=["sync", "async", "exit"])
    args = parser.parse_args()
    if args.synchronous:
        CHECKPOINTER["synchronous"] = args.synchronous
    if args.durability:
        RUN["durability"] = args.durability
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.seeds:
            await print_steps(args.seeds, args.fault_rate, args.bare_runs, tmp)
        for latency in args.latencies:
            for split in ("single", "multi"):
                median, overall = await whole_tasks(latency, split, args.tasks, args.fault_rate, tmp)
                print(
                    f"whole task / critical path, {latency:g} s per image, {split}: "
                    f"median {median:.3f}x, overall {overall:.3f}x"
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
