"""Per-node overhead of the policy nodes, early and late in a long conversation.

A policy turn's own work in the graph (reading the state, building the request, recording the
turn, routing its calls) should not grow with the conversation. This runs a long multi-image
task with a policy that makes one image per act turn, redoes it ``--redos`` times and then
accepts it (1 + n (2 + redos) + 1 turns for n images). The synthetic tool server runs
in-process and there is no checkpointer, so nothing but the node itself is timed: for every
policy node run, the node's wall time from LangGraph's own callbacks (``on_chain_start`` /
``on_chain_end``) minus the time spent inside the policy. It prints the median over repetitions
at turns 2, 20, 60 and 80 (every turn with ``--all``), with how many messages the policy saw.

Usage: python benchmarks/node_overhead.py [--repeats 30] [--images 16] [--redos 3] [--all]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler

from visioncreator.graph import AgentConfig, Budgets, ToolClient, build_agent
from visioncreator.policy import (
    Answer,
    PlanStep,
    PolicyRequest,
    PolicyTurn,
    Reflection,
    Task,
    ToolCall,
    parse_observations,
    parse_turn,
    write_answer,
    write_plan,
    write_reflect,
    write_tool_call,
)
from visioncreator.tool_servers import ServerSettings, build_server

POLICY_NODES = frozenset({"plan", "act", "reflect", "finish"})
SUBJECTS = ["red car", "blue umbrella", "green bench", "yellow kite", "white cup", "black cat", "orange bus",
            "purple vase", "pink chair", "gray clock", "brown bear", "cyan boat"]  # fmt: skip


class OneAtATime:
    """Plans n text-to-image steps, makes one image per act turn, redoes it ``redos`` times, then answers."""

    name = "one-at-a-time"

    def __init__(self, n: int, redos: int) -> None:
        self.n = n
        self.redos = redos

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        made = [
            (o.step or 0, str(o.result["handle"]))
            for m in request.messages
            if m.role == "tool"
            for o in parse_observations(m)
            if o.ok and o.result and o.name == "text_to_image"
        ]
        if request.node == "plan":
            steps = [PlanStep(step=i + 1, goal=f"image {i + 1}", tool="text_to_image") for i in range(self.n)]
            text = write_plan(steps)
        elif request.node == "reflect":
            step, handle = made[-1]
            tries = sum(1 for s, _ in made if s == step)
            if tries <= self.redos:
                text = write_reflect(Reflection(verdict="redo", faults=("a fault",), image=handle))
                text += "\n" + self._call(step, tries)
            else:
                text = write_reflect(Reflection(verdict="accept", image=handle))
        elif not made or made[-1][0] < self.n:
            text = self._call(made[-1][0] + 1 if made else 1, 0)
        else:
            last = {s: h for s, h in made}
            text = write_answer(Answer(images=tuple(last[s] for s in sorted(last))))
        return PolicyTurn(text=text, parsed=parse_turn(text), model=self.name)

    @staticmethod
    def _call(step: int, attempt: int) -> str:
        prompt = f"a brown dog next to a {SUBJECTS[step % len(SUBJECTS)]}"
        return write_tool_call(
            ToolCall(name="text_to_image", arguments={"prompt": prompt, "seed": 100 * step + attempt}, step=step)
        )


class TimedPolicy:
    """Wraps a policy and records how long each turn spent inside it, by turn index."""

    def __init__(self, inner: OneAtATime) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[float, float, int]] = []
        """(start, seconds inside, messages seen) per turn."""

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        started = time.perf_counter()
        turn = await self.inner.respond(request)
        self.calls.append((started, time.perf_counter() - started, len(request.messages)))
        return turn


class NodeClock(AsyncCallbackHandler):
    """Wall time of every policy node run, in run order, from LangGraph's chain callbacks."""

    def __init__(self) -> None:
        self.started: dict[UUID, float] = {}
        self.windows: list[tuple[float, float]] = []

    async def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if kwargs.get("name") in POLICY_NODES:
            self.started[run_id] = time.perf_counter()

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        began = self.started.pop(run_id, None)
        if began is not None:
            self.windows.append((began, time.perf_counter()))


async def one_run(tools: ToolClient, n: int, redos: int, seed: int) -> tuple[list[float], list[int]]:
    policy = TimedPolicy(OneAtATime(n, redos))
    config = AgentConfig(budgets=Budgets(max_turns=200, max_tool_calls=200))
    agent = build_agent(policy=policy, tools=tools, config=config)
    clock = NodeClock()
    task = Task(request=f"{n} images of a brown dog", n_images=n, split="multi")
    await agent.ainvoke(
        {"task": task.model_dump(mode="json"), "seed": seed}, {"callbacks": [clock], "recursion_limit": 1000}
    )
    # A node run that asked the policy nothing (a budget stop, an answer already given) is not a turn.
    overheads: list[float] = []
    seen: list[int] = []
    for started, inside, n_messages in policy.calls:
        window = next((w for w in clock.windows if w[0] <= started <= w[1]), None)
        if window is None:
            raise RuntimeError("a policy turn ran outside every policy node")
        overheads.append(window[1] - window[0] - inside)
        seen.append(n_messages)
    return overheads, seen


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--redos", type=int, default=3, help="Redos per image (at most the budget's 3).")
    parser.add_argument("--all", action="store_true", help="Print every turn, not only turns 2, 20, 60 and 80.")
    args = parser.parse_args()
    by_turn: dict[int, list[float]] = {}
    seen: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = build_server(ServerSettings(store_root=Path(tmp) / "store", fault_rate=0.3, max_queue=1024))
        async with ToolClient(server=server) as tools:
            await one_run(tools, args.images, args.redos, seed=999)  # warm-up: imports, caches
            for seed in range(args.repeats):
                overheads, messages = await one_run(tools, args.images, args.redos, seed)
                for k, (value, n_messages) in enumerate(zip(overheads, messages, strict=True)):
                    by_turn.setdefault(k, []).append(value)
                    seen.setdefault(k, n_messages)
    turns = sorted(by_turn) if args.all else [t for t in (2, 20, 60, 80) if t in by_turn]
    print(f"policy-node overhead (node wall time minus time inside the policy), {args.repeats} runs, "
          f"{args.images}-image task, {args.redos} redos per image, {max(by_turn) + 1} turns")  # fmt: skip
    for t in turns:
        values = sorted(by_turn[t])
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"turn {t:>2}: {len(values):>3} samples, {seen[t]:>3} messages seen, "
              f"median {statistics.median(values) * 1e3:.3f} ms, p90 {p90 * 1e3:.3f} ms")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
