"""Trajectories/s of the real graph with a local transformers policy: 8 concurrent (batched) vs 1.

The rollout path of GRPO (:class:`~visioncreator.rl.train.rollout.GraphRollout`): a model loaded
once, :meth:`TransformersPolicy.from_model` over it, :func:`visioncreator.rl.collection.collect`
through the compiled graph against the in-process synthetic tool server. Three rows per model:

- ``c=1``: one trajectory at a time (every turn generates alone);
- ``c=8 batch 1``: eight in flight, ``batch_size=1`` (what the policy did before batching: turns
  queue for one generate at a time);
- ``c=8 batch 8``: eight in flight, concurrent turns merged into one left-padded generate.

Sampling is seeded per row, so every row runs the very same trajectories (checked: the completion
ids of every turn are compared with the ``c=1`` run). The models are untrained (the tiny random
one, and SmolLM2-135M-Instruct as packaged), so they rarely write the format: a trajectory is
mostly policy turns ended by the format-error budget, which is what batching speeds up.

    python benchmarks/local_batching.py                          # tiny, then SmolLM2
    python benchmarks/local_batching.py --models tiny --trajectories 32
    python benchmarks/local_batching.py --threads 1              # torch.set_num_threads(1)
    python benchmarks/local_batching.py --tools full             # the full tool schemas in the prompt
    python benchmarks/local_batching.py --models smollm --dtype bfloat16 --max-new-tokens 96
    python benchmarks/local_batching.py --models smollm --compute-dtype bfloat16   # GRPO's path in bf16 mixed precision

Torch threads default to what a rollout uses: torch's default unless ``--threads`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rl_learning import brief_tools  # benchmarks/ is on the path when this runs as a script
from visioncreator.policy import LocalPolicySettings, Task, TransformersPolicy, build_tiny_lm, load_smollm
from visioncreator.rl import CollectConfig, TrajectoryRecord, collect
from visioncreator.rl.collection import synthetic_tools
from visioncreator.tool_servers import POLICY_TOOLS

_REQUESTS = ("a red fox on a park bench", "two blue cats below a green apple", "a sign that says hello at night")


def _tasks(n: int) -> list[Task]:
    return [Task(request=f"{_REQUESTS[i % len(_REQUESTS)]} number {i}") for i in range(n)]


def _load(model_dir: Path, dtype: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


async def _level(
    model: Any, tokenizer: Any, store: Path, *, n: int, concurrency: int, batch: int, args: argparse.Namespace
) -> tuple[float, list[TrajectoryRecord], TransformersPolicy]:
    settings = LocalPolicySettings(
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        seed=0,
        flush_denormal=False,
        batch_size=batch,
        batch_wait_s=args.wait,
        compute_dtype=args.compute_dtype,
    )
    policy = TransformersPolicy.from_model(model, tokenizer, settings=settings)
    config = CollectConfig(
        group_size=1, concurrency=concurrency, seed=0, store=store, max_turns=args.max_turns, fault_rate=0.3
    )
    make_tools = brief_tools if args.tools == "brief" else synthetic_tools
    async with make_tools(config) as tools:
        started = time.perf_counter()
        records = await collect(_tasks(n), policy=policy, tools=tools, config=config)
        elapsed = time.perf_counter() - started
    return elapsed, records, policy


def _turn_ids(records: list[TrajectoryRecord]) -> list[list[tuple[int, ...] | None]]:
    return [[t.completion_token_ids for t in r.turns] for r in records]


async def bench(name: str, model_dir: Path, store: Path, args: argparse.Namespace) -> None:
    model, tokenizer = _load(model_dir, args.dtype)
    n = args.trajectories
    await _level(model, tokenizer, store, n=2, concurrency=1, batch=1, args=args)  # warm up
    rows = [("c=1", 1, 1), ("c=8 batch 1", 8, 1), ("c=8 batch 8", 8, 8)]
    rows = [r for r in rows if args.unbatched_8 or r[0] != "c=8 batch 1"]
    base_rate, base_ids = None, None
    for label, concurrency, batch in rows:
        elapsed, records, policy = await _level(
            model, tokenizer, store, n=n, concurrency=concurrency, batch=batch, args=args
        )
        turns = [t for r in records for t in r.turns]
        prompt = sum(len(t.prompt_token_ids or ()) for t in turns)
        completion = sum(len(t.completion_token_ids or ()) for t in turns)
        rate = n / elapsed
        base_rate = base_rate or rate
        ids = _turn_ids(records)
        same = "" if base_ids is None else ("same turns" if ids == base_ids else "TURNS DIFFER")
        base_ids = base_ids or ids
        batches = policy._batcher.batches  # rows per generate call
        tools = sum(len(r.tool_calls) for r in records)
        print(
            f"{name:>7} {label:>12} {n:>5} {elapsed:>8.1f} {rate:>8.3f} {rate / base_rate:>6.2f} "
            f"{statistics.mean(batches):>10.2f} {len(turns) / n:>6.1f} {prompt / len(turns):>8.0f} "
            f"{completion / len(turns):>6.1f} {completion / elapsed:>8.1f} {tools:>5}  {same}"
        )


def _header() -> None:
    print(
        f"{'model':>7} {'row':>12} {'traj':>5} {'wall s':>8} {'traj/s':>8} {'x c=1':>6} "
        f"{'rows/batch':>10} {'turns':>6} {'prompt':>8} {'compl':>6} {'tok/s':>8} {'calls':>5}"
    )


async def main(args: argparse.Namespace) -> None:
    import torch

    logging.getLogger().setLevel(logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # As the policy's own loader does (LocalPolicySettings.flush_denormal): SmolLM2 is ~4x slower without.
    torch.set_flush_denormal(True)
    print(
        f"torch threads {torch.get_num_threads()}, max_new_tokens {args.max_new_tokens}, "
        f"batch wait {args.wait * 1000:.0f} ms, {args.trajectories} trajectories a row, max_turns {args.max_turns}, "
        f"{args.tools} tools, weights {args.dtype}, compute {args.compute_dtype}"
    )
    _header()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models:
            if name == "tiny":
                model_dir = build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=root / "tiny")
            else:
                model_dir = load_smollm(args.cache)
            await bench(name, model_dir, root / f"store-{name}", args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", nargs="+", choices=["tiny", "smollm"], default=["tiny", "smollm"])
    parser.add_argument("--trajectories", type=int, default=16, help="Trajectories per row.")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--wait", type=float, default=0.1, help="batch_wait_s")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave it)")
    parser.add_argument(
        "--tools",
        choices=["brief", "full"],
        default="brief",
        help="brief: one-line tool descriptions in the system prompt, as benchmarks/rl_learning.py trains with; "
        "full: the server's schemas (a ~4k-token prompt with the tiny tokenizer)",
    )
    parser.add_argument(
        "--no-unbatched-8", dest="unbatched_8", action="store_false", help="Skip the 'c=8 batch 1' row."
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="The model's dtype (bfloat16 runs on this CPU's AMX units; float32 is what the trainer's model is)",
    )
    parser.add_argument(
        "--compute-dtype",
        choices=["same", "bfloat16"],
        default="same",
        help="LocalPolicySettings.compute_dtype: bfloat16 over float32 weights is GRPO's rollout path when the "
        "trainer runs in bf16 mixed precision (a bfloat16 copy of the weights, refreshed when they change)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="Where the converted SmolLM2 lives.")
    asyncio.run(main(parser.parse_args()))
