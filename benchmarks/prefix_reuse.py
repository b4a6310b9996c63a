"""How much of each turn's prompt vLLM serves from its prefix cache, on a real multi-turn trajectory.

Starts the real vLLM CPU server (``.venv-vllm``, see ``.ci/vllm-setup.sh``) with the tiny random
model, runs tasks through the graph with the ``openai`` back end (turns constrained to our format,
in-process synthetic tools), and reads vLLM's own counters around every turn:
``vllm:prefix_cache_queries_total`` (prompt tokens looked up) and ``vllm:prefix_cache_hits_total``
(of those, served from the cache). The cache works in whole blocks (128 tokens on the CPU
build), so the partial last block of a prompt is never a hit.

Two back-end settings are compared, each on its own task, in this order on one server:
``append_node_instruction=True`` (the default: the node's instruction goes after the last message,
and is gone from the next turn's prompt) and ``False``. The first turn of the second task finds
the shared system prompt already cached by the first task.

Usage: PYTHONPATH=. python benchmarks/prefix_reuse.py [--tasks 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

from tests.graph.conftest import make_client, run
from tests.vllm.conftest import ConstrainedPolicy, policy_settings, running_server, scrape

from visioncreator.policy import PolicyRequest, PolicyTurn, Task
from visioncreator.policy.vllm import VLLMServer

QUERIES, HITS = "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"


class Metered:
    """Reads the server's prefix-cache counters around each turn (turns run one at a time)."""

    def __init__(self, inner: ConstrainedPolicy, server: VLLMServer) -> None:
        self.inner, self.server, self.name = inner, server, inner.name
        self.rows: list[dict[str, Any]] = []

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        before = await asyncio.to_thread(scrape, self.server, QUERIES, HITS)
        turn = await self.inner.respond(request)
        after = await asyncio.to_thread(scrape, self.server, QUERIES, HITS)
        self.rows.append(
            {
                "node": request.node,
                "prompt": len(turn.prompt_token_ids or ()),
                "queried": after[QUERIES] - before[QUERIES],
                "hit": after[HITS] - before[HITS],
            }
        )
        return turn


async def trajectory(server: VLLMServer, store: Path, task: Task, *, instruction: bool) -> list[dict[str, Any]]:
    policy = Metered(ConstrainedPolicy(policy_settings(server, append_node_instruction=instruction)), server)
    async with make_client(store) as tools:
        result = await asyncio.wait_for(run(tools, task, policy=policy, seed=11), 300)
    assert result.state["termination"] == "answered", result.state["termination"]
    return policy.rows


def report(label: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{label}")
    print(f"{'turn':>4} {'node':<8} {'prompt':>7} {'queried':>8} {'cached':>7} {'fraction':>9}")
    for i, r in enumerate(rows):
        frac = r["hit"] / r["queried"] if r["queried"] else 0.0
        print(f"{i:>4} {r['node']:<8} {r['prompt']:>7} {r['queried']:>8.0f} {r['hit']:>7.0f} {frac:>9.1%}")
    queried = sum(r["queried"] for r in rows)
    hit = sum(r["hit"] for r in rows)
    later = rows[1:]
    q2, h2 = sum(r["queried"] for r in later), sum(r["hit"] for r in later)
    print(f"overall: {hit:.0f}/{queried:.0f} prompt tokens from the cache ({hit / queried:.1%}); ", end="")
    print(f"turns after the first: {h2:.0f}/{q2:.0f} ({h2 / q2:.1%})")


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        print(f"vLLM {server.install.version} at {server.url}, model {server.model}")
        for k in range(args.tasks):
            for instruction in (True, False):
                task = Task(request=f"a red fox next to a blue car, take {k}, instruction {instruction}")
                rows = await trajectory(server, Path(tmp) / "store", task, instruction=instruction)
                report(f"task {k}, append_node_instruction={instruction}", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=1, help="Tasks per setting.")
    asyncio.run(main(parser.parse_args()))
