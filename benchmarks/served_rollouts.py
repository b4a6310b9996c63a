"""Served GRPO rollouts: one batch rolled out locally and from the vLLM CPU server, and the cost of a sync.

The tiny random chat model (tests/vllm/conftest.py) with a LoRA adapter (random B, rank 8) is the
trained policy. One generation batch (``--groups`` tasks x ``--group-size``, ``--max-turns``
turns of at most ``--max-tokens`` tokens, unconstrained, so turns mostly fail to parse and the
graph shows the error) is rolled out:

- ``local``: GRPO's default, a TransformersPolicy over the trainer's (peft) model in this process;
- ``served``: TokenPolicy against vLLM serving the same adapter (what ``rollouts = "served"`` does),
  turns of one prompt grouped into one request with ``n`` (window 50 ms), and with grouping off;
- ``served+ray``: the same on ``--ray-workers`` Ray actors.

Then ``--syncs`` syncs (save the adapter, load it into the server in place). Prints trajectories/s,
turns, requests, and the sync latency. The machine is shared: read figures against the load average.

Usage: .venv/bin/python benchmarks/served_rollouts.py [--groups 4] [--group-size 4] [--ray-workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.vllm.conftest import build_model, server_settings, warm_up

from visioncreator.policy import TokenPolicy
from visioncreator.rl.train import (
    GraphRollout,
    GRPOStage,
    LoraSpec,
    PolicyModel,
    RayCollect,
    ServedPolicy,
    ServedRollouts,
    ServedSession,
    TaskSource,
    load_tasks,
    task_prompt,
)


class _Trainer:
    """What GraphRollout reads of a trainer."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.processing_class = model, tokenizer
        self.state = type("State", (), {"global_step": 0})()
        self.accelerator = type("Accelerator", (), {"unwrap_model": staticmethod(lambda m: m)})()


def peft_model(model_dir: Path) -> Any:
    import torch
    from peft import get_peft_model

    from visioncreator.rl.train import load_policy_model, lora_config
    from visioncreator.rl.train.harness import quiet

    model, tokenizer = load_policy_model(model_dir, torch_threads=1)
    with quiet():
        peft = get_peft_model(model, lora_config(LoraSpec(r=8, alpha=16)))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.3)
    return peft.eval(), tokenizer


def timed(label: str, rollout: GraphRollout, prompts: list[Any], trainer: _Trainer, policies: list[Any]) -> None:
    started = time.perf_counter()
    rollout(prompts, trainer)
    wall = time.perf_counter() - started
    turns = sum(len(b.record.turns) for b in rollout.last)
    sent = f", {sum(p.requests for p in policies)} requests" if policies else ""
    print(f"{label:<24} {len(rollout.last)} trajectories, {turns} turns{sent}: {wall:6.1f} s, "
          f"{len(rollout.last) / wall:5.2f} traj/s, {turns / wall:5.2f} turns/s")  # fmt: skip


def main() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # the MCP server's root handler logs every request
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--syncs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="served-bench-") as tmp:
        work = Path(tmp)
        model_dir = build_model(work / "tiny-lm")
        model, tokenizer = peft_model(model_dir)
        trainer = _Trainer(model, tokenizer)
        policy = PolicyModel(model=str(model_dir), lora=LoraSpec(r=8), max_new_tokens=args.max_tokens, torch_threads=1)
        stage = GRPOStage(
            tasks=TaskSource(splits=("single",), limit=args.groups, fault_rate=0.3),
            num_generations=args.group_size, max_turns=args.max_turns, max_completion_length=8192,
        )  # fmt: skip
        prompts = [task_prompt(t) for t in load_tasks(stage.tasks) for _ in range(args.group_size)]
        launcher = server_settings(work / "vllm.log")
        spec = ServedRollouts(server={"python": launcher.python, "log_file": launcher.log_file, "env": launcher.env})
        started = time.perf_counter()
        with ServedSession(spec, policy, model_dir=model_dir, output_dir=work) as session:
            assert session.server is not None
            warm_up(session.server)
            print(f"server start (LoRA on): {time.perf_counter() - started:.1f} s")
            session.sync(model, 0)

            def rollout(**kw: Any) -> GraphRollout:
                return GraphRollout(stage=stage, policy=policy, store=work / "store", **kw)

            timed("local (transformers)", rollout(), prompts, trainer, [])
            for window in (0.05, 0.0):
                made: list[TokenPolicy] = []

                def factory(_m: Any, tok: Any, window: float = window, made: list[TokenPolicy] = made) -> TokenPolicy:
                    made.append(TokenPolicy(session.policy_settings, tok, group_window_s=window))
                    return made[-1]

                timed(
                    f"served (window {window * 1000:.0f} ms)", rollout(policy_factory=factory), prompts, trainer, made
                )
            if args.ray_workers:
                import ray

                ray.init(
                    num_cpus=args.ray_workers, include_dashboard=False, log_to_driver=False, configure_logging=False
                )
                try:
                    ray_policy = ServedPolicy(session.policy_settings, model_dir, 0.05)
                    ray_rollout = rollout(collect_with=RayCollect(ray_policy, workers=args.ray_workers), concurrency=4)
                    timed(f"served+ray ({args.ray_workers} actors)", ray_rollout, prompts, trainer, [])
                finally:
                    ray.shutdown()
            times = []
            for step in range(1, args.syncs + 1):
                t0 = time.perf_counter()
                session.sync(model, step)
                times.append(time.perf_counter() - t0)
            print(f"sync (save adapter + load in place): median {statistics.median(times) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms over {len(times)}")  # fmt: skip


if __name__ == "__main__":
    main()
