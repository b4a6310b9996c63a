"""Learning works, on this CPU: SmolLM2-135M-Instruct before training, after SFT, after GRPO on top.

The policy is the packaged SmolLM2-135M-Instruct (``load_smollm``). Held-out tasks: the first
``--held-out`` single-image tasks of the built-in synthetic suite. Training tasks: single-image
tasks of ``build_synthetic_suite`` at other seeds (ids renamed, any request equal to a held-out
one dropped). Phases, each resumable and each writing into ``--work``:

1. ``baseline``: the untrained model on the held-out tasks (greedy; success = the outcome
   reward's full success, plus the mean weighted reward);
2. ``sft``: expert trajectories on the training tasks (collector, synthetic faults on), the
   successful ones kept, TRL SFT (``train_sft``), then the held-out evaluation;
3. ``grpo``: a few GRPO steps on top of the SFT model (``train_grpo``: generation replays the
   graph), then the held-out evaluation;
4. ``report``: the curves (loss and reward per step, success per stage).

Prompt length is the cost on two shared cores: the real tool server's descriptions and JSON
schemas make a ~2.4k-token system prompt for SmolLM2 and each observation ~500 tokens. So the
benchmark runs every phase on :class:`BriefTools`: the same in-process synthetic server, with
one-line tool descriptions and minimal schemas in the system prompt, and tool results without
bookkeeping fields (generator seconds, byte counts, URIs). Training and evaluation see the same
prompts (GRPO's rollouts get :func:`brief_tools` through ``train_grpo(tools=...)``).

Usage: .venv/bin/python benchmarks/rl_learning.py --work /tmp/rl-learning [--phase all]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from visioncreator.graph import ToolClient, ToolOutcome
from visioncreator.policy import ToolSpec
from visioncreator.rl import CollectConfig
from visioncreator.rl.train import (
    Curves,
    EvalPoint,
    GRPOStage,
    PolicyModel,
    SFTStage,
    StageCurve,
    StageRecord,
    TaskSource,
    evaluate,
)

_STRING = {"type": "string"}
_SEED = {"type": "integer"}
BRIEF: dict[str, tuple[str, dict[str, Any]]] = {
    "text_to_image": ("Make one image from a prompt.", {"prompt": _STRING, "seed": _SEED}),
    "edit_image": ("Change an image by an instruction.", {"image": _STRING, "instruction": _STRING, "seed": _SEED}),
    "reference_to_image": (
        "Make an image whose subjects look like the reference images.",
        {"prompt": _STRING, "references": {"type": "array", "items": _STRING}, "seed": _SEED},
    ),
    "inspect_image": ("Describe what is in an image.", {"image": _STRING}),
}
_DROP = frozenset({"generator_s", "bytes", "uri", "mime_type", "tool", "answers", "analysis", "preview"})


@dataclasses.dataclass(kw_only=True)
class BriefTools(ToolClient):
    """The synthetic tool server with short tool descriptions and results without bookkeeping fields."""

    def policy_tools(self) -> tuple[ToolSpec, ...]:
        """One-line descriptions and minimal schemas (the server still validates the full ones)."""
        specs = []
        for tool in super().policy_tools():
            description, properties = BRIEF.get(tool.name, (tool.description, {}))
            schema = {"type": "object", "properties": properties} if properties else tool.input_schema
            specs.append(ToolSpec(name=tool.name, description=description, input_schema=schema))
        return tuple(specs)

    async def call(self, name: str, arguments: Mapping[str, Any], *, look: bool = False) -> ToolOutcome:
        """The server's outcome, minus fields no policy needs."""
        outcome = await super().call(name, arguments, look=look)
        if outcome.structured is None:
            return outcome
        kept = {k: v for k, v in outcome.structured.items() if k not in _DROP}
        seen = outcome.inspection
        seen = None if seen is None else {k: v for k, v in seen.items() if k not in _DROP}
        return dataclasses.replace(outcome, structured=kept, inspection=seen)


def brief_tools(config: CollectConfig, *, max_queue: int = 4096) -> ToolClient:
    """Like ``collector.synthetic_tools``, as :class:`BriefTools`."""
    from visioncreator.tool_servers import ServerSettings, build_server

    assert config.store is not None
    settings = ServerSettings(
        store_root=config.store, fault_rate=config.fault_rate, tool_seed=config.tool_seed, max_queue=max_queue
    )
    return BriefTools(server=build_server(settings))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def step_printer(stage: str) -> Any:
    def show(entry: dict[str, Any]) -> None:
        shown = {k: entry[k] for k in ("loss", "reward", "grad_norm", "groups/degenerate") if k in entry}
        if shown and "train_runtime" not in entry:
            values = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
            log(f"{stage} step {entry.get('step')}/{entry.get('max_steps')} {values}")

    return show


def train_suite(path: Path, held_out: TaskSource, n_tasks: int) -> None:
    """Single-image training tasks from other suite seeds, none equal to a held-out request."""
    from visioncreator.evals import build_synthetic_suite, load_suite, write_suite

    if path.is_file():
        return
    held = {t.request for t in load_suite(held_out.suite) if t.split == "single"}
    tasks: list[Any] = []
    seed = 1
    while len(tasks) < n_tasks:
        suite = asyncio.run(build_synthetic_suite(per_split=40, seed=seed))
        for t in suite:
            if t.split == "single" and t.request not in held and len(tasks) < n_tasks:
                tasks.append(t.model_copy(update={"id": f"train-s{seed}-{t.id}"}))
                held.add(t.request)
        seed += 1
    write_suite(tasks, path)


def eval_point(
    args: argparse.Namespace, policy: PolicyModel, model_dir: Path, path: Path, after: str, tool_seed: int = 0
) -> EvalPoint:
    if path.is_file():
        return EvalPoint.model_validate_json(path.read_text())
    log(f"evaluating {after} on {args.held_out} held-out tasks ...")

    def done(event: dict[str, Any]) -> None:
        log(f"  eval {after} {event['task']} success={event['success']:.0f}")

    point = evaluate(
        model_dir, held_out_tasks(args), policy=policy, store=Path(args.work) / "store", after=after,
        seed=0, tool_seed=tool_seed, max_turns=args.eval_max_turns, tools=brief_tools, progress=done,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(point.model_dump_json(indent=2))
    log(f"{after}: success {point.success_rate:.3f} mean reward {point.mean_reward:.3f} ({point.wall_s:.0f} s)")
    return point


def held_out_tasks(args: argparse.Namespace) -> TaskSource:
    return TaskSource(splits=("single",), limit=args.held_out, fault_rate=0.3)


def policy_model(args: argparse.Namespace) -> PolicyModel:
    return PolicyModel(model="smollm2", max_new_tokens=args.max_new_tokens, temperature=1.0, torch_threads=1)


def phase_baseline(args: argparse.Namespace) -> None:
    from visioncreator.rl.train import model_dir_for

    policy = policy_model(args)
    eval_point(args, policy, model_dir_for(policy), Path(args.work) / "eval-initial.json", "initial")


def _collect_expert(args: argparse.Namespace, suite: Path) -> list[Any]:
    from visioncreator.graph import expert_policy
    from visioncreator.rl import collect_to, read_records
    from visioncreator.rl.train import load_tasks

    path = Path(args.work) / "expert.jsonl"
    config = CollectConfig(group_size=1, concurrency=8, seed=1, fault_rate=0.3, store=Path(args.work) / "store")

    async def run() -> None:
        async with brief_tools(config) as tools:
            tasks = load_tasks(TaskSource(suite=str(suite), splits=("single",)))
            await collect_to(path, tasks, policy=expert_policy(), tools=tools, config=config)

    asyncio.run(run())
    return list(read_records(path))


def phase_sft(args: argparse.Namespace) -> None:
    from visioncreator.rl.train import train_sft

    work = Path(args.work)
    out = work / "01-sft"
    policy = policy_model(args)
    if not (out / "stage.json").is_file():
        suite = work / "train-suite.jsonl"
        train_suite(suite, held_out_tasks(args), args.train_tasks)
        records = _collect_expert(args, suite)
        ok = sum(r.reward_details.get("outcome", {}).get("success", 0.0) == 1.0 for r in records)
        log(f"expert: {len(records)} trajectories, {ok} successful (the SFT set)")
        stage = SFTStage(
            name="sft", max_steps=args.sft_steps, learning_rate=args.sft_lr, batch_size=args.sft_batch,
            max_length=2048, save_steps=10, logging_steps=1,
        )  # fmt: skip
        began = time.perf_counter()
        log(f"SFT: {args.sft_steps} steps, batch {args.sft_batch}, lr {args.sft_lr}, full fine-tuning")
        result = train_sft(stage, policy, output_dir=out, seed=0, records=records, progress=step_printer("sft"))
        record = StageRecord(
            index=1, name="sft", kind="sft", model_dir=str(result.model_dir), start_model="smollm2",
            metrics=result.metrics, log_history=result.log_history, wall_s=time.perf_counter() - began,
        )  # fmt: skip
        (out / "stage.json").write_text(record.model_dump_json(indent=2))
        log(f"SFT done in {record.wall_s:.0f} s")
    eval_point(args, policy, out / "model", out / "eval.json", "01-sft")


def phase_grpo(args: argparse.Namespace) -> None:
    from visioncreator.rl.train import train_grpo

    work = Path(args.work)
    out = work / "02-grpo"
    policy = policy_model(args)
    if not (out / "stage.json").is_file():
        start = work / "01-sft" / "model"
        if not (start / "config.json").is_file():
            sys.exit("run the sft phase first")
        stage = GRPOStage(
            name="grpo",
            tasks=TaskSource(suite=str(work / "train-suite.jsonl"), splits=("single",), limit=args.grpo_steps),
            num_generations=args.grpo_generations, max_steps=args.grpo_steps, learning_rate=args.grpo_lr,
            max_turns=args.eval_max_turns, max_completion_length=1536, save_steps=1, logging_steps=1,
        )  # fmt: skip
        began = time.perf_counter()
        log(f"GRPO: {args.grpo_steps} steps x {args.grpo_generations} generations, lr {args.grpo_lr}")
        result = train_grpo(
            stage, policy, model_dir=start, output_dir=out, seed=0, progress=step_printer("grpo"), tools=brief_tools
        )
        record = StageRecord(
            index=2, name="grpo", kind="grpo", model_dir=str(result.model_dir), start_model=str(start),
            metrics=result.metrics, log_history=result.log_history, wall_s=time.perf_counter() - began,
        )  # fmt: skip
        (out / "stage.json").write_text(record.model_dump_json(indent=2))
        log(f"GRPO done in {record.wall_s:.0f} s")
    eval_point(args, policy, out / "model", out / "eval.json", "02-grpo")


def phase_reeval(args: argparse.Namespace) -> None:
    """The trained models again with other tool seeds (other injected faults): the evaluation's noise.

    The evaluation is greedy and the model writes its own tool seeds, so only the server's tool
    seed changes what a trajectory meets.
    """
    policy = policy_model(args)
    work = Path(args.work)
    for seed in args.tool_seeds:
        for stage_name in ("01-sft", "02-grpo"):
            model = work / stage_name / "model"
            if (model / "config.json").is_file():
                path = work / stage_name / f"eval-toolseed{seed}.json"
                eval_point(args, policy, model, path, stage_name, tool_seed=seed)


def phase_report(args: argparse.Namespace) -> None:
    from visioncreator.rl.train import curve_steps

    work = Path(args.work)
    curves = Curves()
    if (work / "eval-initial.json").is_file():
        curves.evals.append(EvalPoint.model_validate_json((work / "eval-initial.json").read_text()))
    for stage_name in ("01-sft", "02-grpo"):
        marker = work / stage_name / "stage.json"
        if marker.is_file():
            record = StageRecord.model_validate_json(marker.read_text())
            curves.stages.append(StageCurve(name=record.name, kind=record.kind, steps=curve_steps(record.log_history)))
            print(f"\n== {stage_name}: {record.wall_s:.0f} s, metrics {json.dumps(record.metrics)}")
            for row in curves.stages[-1].steps:
                values = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step")
                print(f"  step {int(row['step']):3d} {values}")
        eval_file = work / stage_name / "eval.json"
        if eval_file.is_file():
            curves.evals.append(EvalPoint.model_validate_json(eval_file.read_text()))
    print("\n== held-out success per stage")
    print(f"{'after':10s} {'n':>3s} {'success':>8s} {'reward':>7s} {'outcome':>8s} {'format':>7s} {'eval s':>7s}")
    for p in curves.evals:
        print(
            f"{p.after:10s} {p.n:3d} {p.success_rate:8.3f} {p.mean_reward:7.3f} "
            f"{p.mean_rewards.get('outcome', 0.0):8.3f} {p.mean_rewards.get('format', 0.0):7.3f} {p.wall_s:7.0f}"
        )
    reevals = sorted(work.glob("0*/eval-toolseed*.json"))
    if reevals:
        print("\n== the same models with other tool seeds (other injected faults)")
        for path in reevals:
            p = EvalPoint.model_validate_json(path.read_text())
            seed = path.stem.removeprefix("eval-toolseed")
            print(f"{p.after:10s} tool seed {seed:>2s} {p.n:3d} {p.success_rate:8.3f} {p.mean_reward:7.3f}")
    (work / "curves.json").write_text(curves.model_dump_json(indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="working directory (resumable)")
    parser.add_argument("--phase", choices=("baseline", "sft", "grpo", "reeval", "report", "all"), default="all")
    parser.add_argument("--held-out", type=int, default=12)
    parser.add_argument("--train-tasks", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=144)
    parser.add_argument("--eval-max-turns", type=int, default=8)
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--sft-batch", type=int, default=1)
    parser.add_argument("--sft-lr", type=float, default=2e-4)
    parser.add_argument("--grpo-steps", type=int, default=3)
    parser.add_argument("--grpo-generations", type=int, default=2)
    parser.add_argument("--grpo-lr", type=float, default=1e-5)
    parser.add_argument("--tool-seeds", type=int, nargs="*", default=[1], help="tool seeds of the reeval phase")
    args = parser.parse_args()
    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    phases = ("baseline", "sft", "grpo", "report") if args.phase == "all" else (args.phase,)
    for phase in phases:
        run = {"baseline": phase_baseline, "sft": phase_sft, "grpo": phase_grpo, "reeval": phase_reeval}
        run.get(phase, phase_report)(args)


if __name__ == "__main__":
    main()
