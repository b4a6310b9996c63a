"""Trajectory lengths in tokens: would the shipped configs cut any expert trajectory?

Method. For each shipped config (``configs/*.toml``), its policy's tokenizer (``tiny``: the tiny
Qwen2 tokenizer built on the spot; ``smollm2``: the packaged SmolLM2-135M-Instruct's) measures the
scripted expert's trajectories on every split of the built-in suite, rendered as SFT renders them
(:func:`visioncreator.rl.train.lengths.expert_lengths`, faults at the suite default rate 0.3), once
per seed (``--seeds`` seeds from ``--first-seed``, default 10: the seed decides which faults strike,
``--fault-rate`` how often). Per split: the median and longest completion (tokens after the first
prompt: what GRPO's ``max_completion_length`` bounds) and the longest whole sequence (what SFT's
``max_length`` bounds).

Then per stage: its limit, as given or as the trainer derives it (GRPO: the expert on the stage's
own tasks, times ``HEADROOM``, rounded up to 64, at most the context; SFT: the longest selected
example rounded up to 64, at most the context, so only what exceeds the context can be dropped),
and how many trajectories of the tasks it trains on exceed it, over all seeds (for a GRPO stage,
measured again at its ``max_turns``, where its rollouts stop; the split table uses the collector's
default of 40 turns):
the derivation (seeds 0-3, ``SAMPLES`` samples a task) must also hold unseen seeds' trajectories.
A limit is at most the model's context: a trajectory longer than that cannot be held at all.

Usage: PYTHONPATH=. python benchmarks/trajectory_lengths.py [--seeds 3] [--configs configs/rpco.toml ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from visioncreator.rl.train.config import GRPOStage, TaskSource, TrainConfig, load_train_config
from visioncreator.rl.train.lengths import LengthReport, context_length, expert_lengths, with_completion_limit
from visioncreator.rl.train.models import model_dir_for
from visioncreator.rl.train.recipe import rpco_stages
from visioncreator.rl.train.rollout import load_tasks

SPLITS = ("single", "multi", "img2img")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _tokenizer(config: TrainConfig) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir_for(config.policy))


def _reports(
    tokenizer: Any, seeds: range, fault_rate: float, max_turns: int | None = None
) -> dict[str, list[LengthReport]]:
    """Per split, one report per seed, over the whole built-in split."""
    source = {s: TaskSource(splits=(s,), fault_rate=fault_rate) for s in SPLITS}
    return {s: [expert_lengths(source[s], tokenizer, seed=k, max_turns=max_turns) for k in seeds] for s in SPLITS}


def _limit(stage: Any, tokenizer: Any) -> tuple[str, int, str]:
    """The stage's bounded quantity, its limit, and where the limit comes from."""
    if isinstance(stage, GRPOStage):
        if stage.max_completion_length is not None:
            return "completion", stage.max_completion_length, "set"
        resolved, _ = with_completion_limit(stage, tokenizer)
        return "completion", resolved.max_completion_length or 0, "derived"
    if stage.max_length is not None:
        return "total", stage.max_length, "set"
    context = context_length(tokenizer)
    return "total", context or 1 << 62, "derived from the selected examples at train time: at most the context"


def _over(reports: list[LengthReport], stage: Any, quantity: str, limit: int) -> str:
    """``over/n``: of the trajectories of the tasks the stage trains on, how many exceed ``limit``."""
    trained = {t.task_id for t in load_tasks(stage.tasks)}
    n = over = 0
    for report in reports:
        values = report.completion if quantity == "completion" else report.total
        for task_id, value in zip(report.task_ids, values, strict=True):
            if task_id not in trained:
                continue
            n += 1
            over += value > limit
    return f"{over}/{n}"


def main() -> None:
    """Print the table for each config."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="collection seeds per split")
    parser.add_argument("--first-seed", type=int, default=10, help="first measured seed (derivations use 0-3)")
    parser.add_argument("--fault-rate", type=float, default=0.3, help="synthetic fault rate of the measured runs")
    parser.add_argument("--configs", nargs="*", type=Path, default=sorted(CONFIGS.glob("*.toml")))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    cache: dict[str, tuple[Any, dict[str, list[LengthReport]]]] = {}
    for path in args.configs:
        config = load_train_config(path, default_stages=rpco_stages())
        if config.policy.model not in cache:
            tokenizer = _tokenizer(config)
            cache[config.policy.model] = (tokenizer, _reports(tokenizer, seeds, args.fault_rate))
        tokenizer, reports = cache[config.policy.model]
        context = context_length(tokenizer)
        print(f"\n{path.name}  (tokenizer: {config.policy.model}, context {context}, {args.seeds} seeds per split)")
        print(f"  {'split':8} {'n':>4} {'median compl':>12} {'max compl':>9} {'max total':>9}")
        for split in SPLITS:
            done = reports[split]
            completion = sorted(c for r in done for c in r.completion)
            total = max(t for r in done for t in r.total)
            median = completion[len(completion) // 2]
            print(f"  {split:8} {len(completion):>4} {median:>12} {completion[-1]:>9} {total:>9}")
        for stage in config.stages:
            quantity, limit, source = _limit(stage, tokenizer)
            done = reports
            if isinstance(stage, GRPOStage):  # its rollouts stop at its max_turns: measure the expert so
                done = _reports(tokenizer, seeds, stage.tasks.fault_rate, stage.max_turns)
            overs = " ".join(f"{s}={_over(done[s], stage, quantity, limit)}" for s in stage.tasks.splits)
            print(f"  stage {stage.name} ({stage.kind}): {quantity} limit {limit} ({source}); over it: {overs}")


if __name__ == "__main__":
    main()
