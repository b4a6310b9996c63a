"""What our ``openai`` back end adds over a bare httpx request to the same vLLM server.

Starts the real vLLM CPU server (``.venv-vllm``) with the tiny random model and times, in
alternation, the same chat request two ways:

- ``bare``: ``httpx.AsyncClient.post`` of the exact body ``OpenAIPolicy`` sends, JSON decoded;
- ``policy``: ``OpenAIPolicy.respond`` (message conversion, body, POST, JSON, token ids,
  log-probabilities, ``parse_turn``, ``PolicyTurn``).

Both send the same seed, so the server generates the same ``--max-tokens`` tokens for both; the
difference of each pair is the client's overhead. Reports medians and the median and p95 of the
per-pair difference.

Usage: PYTHONPATH=. python benchmarks/policy_overhead.py [--reps 60] [--max-tokens 4] [--history 6]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from tests.vllm.conftest import policy_settings, running_server

from visioncreator.policy import Message, OpenAIPolicy, PolicyRequest, Task, task_message


def _p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        settings = policy_settings(server, max_tokens=args.max_tokens, extra_body={"min_tokens": args.max_tokens})
        messages = [task_message(Task(request="a red fox next to a blue car"))]
        for i in range(args.history):  # a conversation of some length, as mid-trajectory
            messages.append(Message(role="assistant", content=f"<think>step {i} of the plan</think>", node="act"))
            messages.append(Message(role="user", content=f"<error>nothing to do at step {i}</error>"))
        request = PolicyRequest(messages=tuple(messages), node="act", seed=5)
        async with OpenAIPolicy(settings) as policy, httpx.AsyncClient(timeout=60.0, trust_env=False) as client:
            body = await policy._body(request, 1)  # the exact bytes the policy sends
            bare_s: list[float] = []
            ours_s: list[float] = []
            for rep in range(args.reps + args.warmup):
                t0 = time.perf_counter()
                reply = await client.post(settings.chat_url, json=body)
                reply.raise_for_status()
                reply.json()
                t1 = time.perf_counter()
                turn = await policy.respond(request)
                t2 = time.perf_counter()
                assert turn.completion_token_ids is not None
                assert len(turn.completion_token_ids) == args.max_tokens
                if rep >= args.warmup:
                    bare_s.append(t1 - t0)
                    ours_s.append(t2 - t1)
        diff_ms = [1000 * (o - b) for o, b in zip(ours_s, bare_s, strict=True)]
        prompt = len(turn.prompt_token_ids or ())
        print(f"vLLM {server.install.version}; prompt {prompt} tokens, ", end="")
        print(f"{args.max_tokens} completion tokens, {args.reps} pairs")
        print(f"bare httpx   median {1000 * statistics.median(bare_s):7.2f} ms   p95 {1000 * _p95(bare_s):7.2f} ms")
        print(f"OpenAIPolicy median {1000 * statistics.median(ours_s):7.2f} ms   p95 {1000 * _p95(ours_s):7.2f} ms")
        median, p95 = statistics.median(diff_ms), _p95(diff_ms)
        print(f"overhead (policy - bare, per pair): median {median:+.2f} ms, p95 {p95:+.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--history", type=int, default=6, help="Assistant/user pairs before the asking turn.")
    asyncio.run(main(parser.parse_args()))
