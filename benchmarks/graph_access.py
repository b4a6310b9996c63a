"""What a LangGraph Server graph access costs: the hosted factory against one that opens its tool server each time.

LangGraph Server calls a graph factory on every access (a run, a thread's state or history, the
schemas Studio reads). ``visioncreator.graph.hosted.make_graph`` opens the tool session once per
process (the first access, or the server's lifespan) and hands out the same compiled agent after
that; a naive factory spawns the synthetic tool server over stdio on every access. Both are
timed here in-process, with the input/output JSON schema build Studio asks for.

Usage: python benchmarks/graph_access.py [--accesses 50] [--naive 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from visioncreator.graph import ToolClient, ToolServerSpec, build_agent, expert_policy
from visioncreator.graph.hosted import HOST, make_graph


async def main(accesses: int, naive: int) -> None:
    with tempfile.TemporaryDirectory() as store:
        os.environ["VISIONCREATOR_STORE"] = store
        started = time.perf_counter()
        agent = await make_graph()
        first = time.perf_counter() - started
        later = []
        for _ in range(accesses):
            started = time.perf_counter()
            assert await make_graph() is agent
            later.append(time.perf_counter() - started)
        started = time.perf_counter()
        agent.get_input_jsonschema()
        agent.get_output_jsonschema()
        schemas = time.perf_counter() - started
        await HOST.close()
        print(
            f"hosted factory: first access {first * 1e3:.0f} ms (opens the tool session), "
            f"later accesses median {statistics.median(later) * 1e6:.1f} us, max {max(later) * 1e6:.1f} us "
            f"({accesses} accesses); input+output JSON schemas {schemas * 1e3:.1f} ms"
        )
        spawns = []
        for _ in range(naive):
            started = time.perf_counter()
            async with ToolClient(spec=ToolServerSpec.synthetic(store=store)) as tools:
                build_agent(policy=expert_policy(), tools=tools)
                spawns.append(time.perf_counter() - started)
        if spawns:
            print(
                f"naive factory (a tool server per access): median {statistics.median(spawns) * 1e3:.0f} ms per access"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=int, default=50, help="later accesses of the hosted factory to time")
    parser.add_argument(
        "--naive", type=int, default=3, help="accesses of a factory that spawns its tool server each time"
    )
    args = parser.parse_args()
    asyncio.run(main(args.accesses, args.naive))
