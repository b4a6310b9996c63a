"""Does GRPO beat more SFT? SmolLM2-135M-Instruct: SFT to convergence, then GRPO vs an SFT control.

The policy is the packaged SmolLM2-135M-Instruct. Held-out: ``--held-out`` single-image tasks
(built-in synthetic generator, seed 0) x ``--tool-seeds`` tool seeds, faults injected at
``--fault-rate`` (0.5), greedy decoding. Training tasks: single-image tasks of other generator
seeds, none whose request equals a held-out one. Phases, each resumable, each writing into ``--work``:

1. ``data``: the held-out and training suites, expert trajectories on the training tasks (faults
   at the same rate: the expert redoes faulty images, so SFT sees redos);
2. ``sft``: SFT on the expert's successful trajectories to convergence: chunks of
   ``--sft-chunk`` steps until the chunk's mean loss improves by less than ``--sft-plateau``
   (relative) on the previous chunk's, or ``--sft-max-epochs`` epochs;
3. ``grpo``: GRPO on top of the SFT model, groups branched at the first reflect node
   (``branch_at="reflect"``), every member of a group with the same tool randomness
   (``call_seeds="shared"``), ``per_turn`` credit (each reflect turn by its own verdicts, each
   image call by its image: what the policy decided at that turn, not the trajectory's luck);
   stopped by training time (``--budget-min``: CPU seconds over the threads, see :class:`_train_clock.Clock`),
   checked between chunks of ``--grpo-chunk`` steps;
4. ``control``: SFT continued from the SFT model on the same data for the same training time as the
   GRPO phase took (converted to steps at the SFT phase's measured seconds per step);
5. ``eval``: every arm (``--arms``; ``initial`` is the untrained model) on every held-out task at
   every tool seed; every trajectory kept in ``evals/ARM-seedK.jsonl``;
6. ``report``: success with 95% intervals, GRPO vs control paired (exact McNemar, paired
   bootstrap over tasks), reward curves (``curves.png``), reflection verdicts and the redo rate on
   faulty images, the evals HTML report of each arm's trajectories, and the cost of each step
   (:mod:`_rl_report`).

Prompt length is the cost on two shared cores, so every phase runs on :class:`BriefTools`: the
same in-process synthetic server with one-line tool descriptions and minimal schemas, and tool
results without bookkeeping fields. Training and evaluation see the same prompts.

Usage: .venv/bin/python benchmarks/rl_learning.py --work /tmp/rl-learning [--phase all] [--budget-min 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

from _brief_tools import BRIEF, BriefTools, brief_tools
from _learning_tasks import disjoint_training_tasks
from _train_clock import Clock, add_chunk
from visioncreator.rl import CollectConfig
from visioncreator.rl.train import GRPOStage, PolicyModel, SFTStage, TaskSource, evaluate

__all__ = ["BRIEF", "BriefTools", "brief_tools"]  # where other benchmarks found them

ARMS = ("initial", "sft", "control", "grpo")
"""Every arm: the untrained model, SFT to convergence, SFT continued (the control), GRPO on SFT."""
STAGE_DIRS = {"sft": "01-sft", "grpo": "02-grpo", "control": "03-control"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def step_printer(stage: str) -> Any:
    def show(entry: dict[str, Any]) -> None:
        keys = ("loss", "reward", "rewards/plan/mean", "rewards/reflection/mean", "groups/degenerate")
        shown = {k.split("/")[-2] if "/" in k else k: entry[k] for k in keys if k in entry}
        if shown and "train_runtime" not in entry:
            values = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
            log(f"{stage} step {entry.get('step')}/{entry.get('max_steps')} {values}")

    return show


def policy_model(args: argparse.Namespace) -> PolicyModel:
    return PolicyModel(
        model="smollm2", max_new_tokens=args.max_new_tokens, temperature=1.0, torch_threads=args.threads,
        dtype=args.dtype,
    )  # fmt: skip


def held_out(args: argparse.Namespace) -> TaskSource:
    path = str(Path(args.work) / "held-out.jsonl")
    return TaskSource(suite=path, splits=("single",), limit=args.eval_limit, fault_rate=args.fault_rate)


def train_tasks(args: argparse.Namespace) -> TaskSource:
    return TaskSource(suite=str(Path(args.work) / "train-suite.jsonl"), splits=("single",), fault_rate=args.fault_rate)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


# ---- data ---------------------------------------------------------------------------------------


def phase_data(args: argparse.Namespace) -> None:
    """The held-out suite, the disjoint training suite, and the expert's trajectories on it."""
    from visioncreator.evals import build_synthetic_suite, write_suite
    from visioncreator.graph import expert_policy
    from visioncreator.rl import collect_to, read_records
    from visioncreator.rl.train import load_tasks

    work = Path(args.work)
    held_path, train_path, expert = work / "held-out.jsonl", work / "train-suite.jsonl", work / "expert.jsonl"
    if not held_path.is_file():
        suite = asyncio.run(build_synthetic_suite(per_split=args.held_out, seed=0))
        write_suite([t for t in suite if t.split == "single"], held_path)
    if not train_path.is_file():
        held = [t["request"] for t in map(json.loads, held_path.read_text().splitlines())]
        write_suite(disjoint_training_tasks(held, args.train_tasks), train_path)
    config = CollectConfig(group_size=1, concurrency=8, seed=1, fault_rate=args.fault_rate, store=work / "store")

    async def run() -> None:
        async with brief_tools(config) as tools:
            await collect_to(expert, load_tasks(train_tasks(args)), policy=expert_policy(), tools=tools, config=config)

    asyncio.run(run())
    records = read_records(expert)
    ok = [r for r in records if r.reward_details.get("outcome", {}).get("success", 0.0) == 1.0]
    redos = sum(any(s.verdict != "accept" for t in r.turns for s in t.parsed.reflections) for r in ok)
    log(f"expert: {len(records)} trajectories, {len(ok)} successful (the SFT set), {redos} of them redo an image")


def _sft_set(args: argparse.Namespace) -> list[Any]:
    from visioncreator.rl import read_records

    records = read_records(Path(args.work) / "expert.jsonl")
    return [r for r in records if r.reward_details.get("outcome", {}).get("success", 0.0) == 1.0]


# ---- SFT to convergence, and the SFT control ------------------------------------------------------


TRL = {"lr_scheduler_type": "constant", "save_total_limit": 2}
"""Both stages: a constant learning rate (chunks resume one run); the two newest checkpoints (1.6 GB each)."""


def _sft_stage(args: argparse.Namespace, max_steps: int) -> SFTStage:
    # A constant learning rate: the chunks resume one run, and the control continues it. No length
    # cap: a 2,048-token cap dropped 54 of 176 examples, the long ones, i.e. those that redo an image.
    return SFTStage(
        name="sft", max_steps=max_steps, learning_rate=args.sft_lr, batch_size=args.sft_batch, max_length=None,
        save_steps=max(1, min(args.sft_chunk, max_steps)), logging_steps=1, trl=TRL,
    )  # fmt: skip


def _chunk_loss(history: list[dict[str, Any]], first: int, last: int) -> float:
    losses = [float(e["loss"]) for e in history if "loss" in e and first < int(e.get("step", 0)) <= last]
    return sum(losses) / len(losses) if losses else math.nan


def _train_sft_chunks(
    args: argparse.Namespace, out: Path, start: Path | None, plan: list[int], *, plateau: bool
) -> dict[str, Any]:
    """SFT resumed chunk by chunk up to each target step of ``plan``; stops early on a loss plateau if asked."""
    from visioncreator.rl.train import train_sft

    state_path = out / "chunks.json"
    state = read_json(state_path) if state_path.is_file() else {"chunks": [], "train_s": 0.0, "stopped": None}
    records, policy = _sft_set(args), policy_model(args)
    done = state["chunks"][-1]["step"] if state["chunks"] else 0
    result = None
    for target in plan:
        if target <= done or state["stopped"]:
            continue
        clock = Clock(args.threads)
        result = train_sft(_sft_stage(args, target), policy, model_dir=start, output_dir=out, seed=0,
                           records=records, progress=step_printer(out.name))  # fmt: skip
        loss = _chunk_loss(result.log_history, done, target)
        add_chunk(state, {"step": target, "loss": loss, **clock.elapsed()})
        state["log_history"] = result.log_history
        previous = state["chunks"][-2]["loss"] if len(state["chunks"]) > 1 else math.nan
        if plateau and previous == previous and (previous - loss) < args.sft_plateau * previous:
            state["stopped"] = f"loss plateau at step {target}: {previous:.4f} -> {loss:.4f}"
        write_json(state_path, state)
        chunk = state["chunks"][-1]
        took = f"{chunk['cpu_s']:.0f} s CPU ({chunk['wall_s']:.0f} s wall)"
        log(f"{out.name}: step {target}, chunk loss {loss:.4f}, {took}")
        done = target
    return state


def phase_sft(args: argparse.Namespace) -> None:
    out = Path(args.work) / STAGE_DIRS["sft"]
    n = len(_sft_set(args))
    per_epoch = max(1, math.ceil(n / args.sft_batch))
    cap = max(1, args.sft_max_steps or math.ceil(per_epoch * args.sft_max_epochs))
    plan = [*range(args.sft_chunk, cap, args.sft_chunk), cap]
    log(f"SFT: {n} examples, {per_epoch} steps per epoch, at most {cap} steps in chunks of {args.sft_chunk}")
    state = _train_sft_chunks(args, out, None, plan, plateau=True)
    steps = state["chunks"][-1]["step"]
    state["s_per_step"] = state["train_s"] / steps
    write_json(out / "chunks.json", state)
    log(f"SFT done: {steps} steps, {state['train_s']:.0f} s ({state['s_per_step']:.1f} s/step); {state['stopped']}")


def _grpo_stage(args: argparse.Namespace, max_steps: int) -> GRPOStage:
    fields: dict[str, Any] = {}
    if "groups_per_step" in GRPOStage.model_fields:  # several groups per optimiser step, where the stage has it
        fields["groups_per_step"] = args.grpo_groups
    else:
        fields["batch_size"] = args.grpo_groups * args.grpo_generations
    return GRPOStage(
        name="grpo", tasks=train_tasks(args), num_generations=args.grpo_generations, max_steps=max_steps,
        learning_rate=args.grpo_lr, beta=args.grpo_beta, max_turns=args.max_turns, max_completion_length=None,
        branch_at="reflect", call_seeds="shared", credit="per_turn", save_steps=1, logging_steps=1,
        trl=TRL, **fields,
    )  # fmt: skip


def phase_grpo(args: argparse.Namespace) -> None:
    """GRPO from the SFT model in chunks (each resumes the last checkpoint) until the wall-time budget is spent."""
    from visioncreator.rl.train import train_grpo

    work = Path(args.work)
    out, start = work / STAGE_DIRS["grpo"], work / STAGE_DIRS["sft"] / "model"
    if not (start / "config.json").is_file():
        raise SystemExit("run the sft phase first")
    state_path = out / "chunks.json"
    state = read_json(state_path) if state_path.is_file() else {"chunks": [], "train_s": 0.0}
    budget = args.budget_min * 60.0
    steps = state["chunks"][-1]["step"] if state["chunks"] else 0
    if args.grpo_max_steps is not None:
        budget = math.inf if steps < args.grpo_max_steps else 0.0
    while state["train_s"] < budget and (args.grpo_max_steps is None or steps < args.grpo_max_steps):
        per_step = state["train_s"] / steps if steps else None
        left = budget - state["train_s"]
        if per_step is not None and left < per_step:
            break  # the next step would end past the budget
        room = args.grpo_chunk if per_step is None or math.isinf(left) else int(left / per_step)
        target = steps + max(1, min(args.grpo_chunk, room))
        if args.grpo_max_steps is not None:
            target = min(target, args.grpo_max_steps)
        clock = Clock(args.threads)
        result = train_grpo(
            _grpo_stage(args, target), policy_model(args), model_dir=start, output_dir=out, seed=0,
            progress=step_printer("grpo"), tools=brief_tools,
        )  # fmt: skip
        add_chunk(state, {"step": target, **clock.elapsed(), "metrics": result.metrics})
        state["log_history"] = result.log_history
        write_json(state_path, state)
        steps = target
        log(f"grpo: {steps} steps, {state['train_s']:.0f} s CPU of {budget:.0f} s ({state['train_wall_s']:.0f} s wall)")
    state["s_per_step"] = state["train_s"] / max(1, steps)
    write_json(state_path, state)


def phase_control(args: argparse.Namespace) -> None:
    """SFT continued from the SFT model for the GRPO phase's training time, at the SFT phase's seconds per step."""
    work = Path(args.work)
    sft, grpo = read_json(work / STAGE_DIRS["sft"] / "chunks.json"), work / STAGE_DIRS["grpo"] / "chunks.json"
    if not grpo.is_file():
        raise SystemExit("run the grpo phase first")
    grpo_s = read_json(grpo)["train_s"]
    steps = max(1, round(grpo_s / sft["s_per_step"]))
    if args.control_max_steps is not None and steps > args.control_max_steps:
        log(f"control: capped at {args.control_max_steps} steps (not matched to GRPO's time: a smoke run)")
        steps = args.control_max_steps
    log(f"control: {steps} SFT steps = GRPO's {grpo_s:.0f} s at {sft['s_per_step']:.1f} s per SFT step")
    plan = [*range(args.sft_chunk, steps, args.sft_chunk), steps]
    out = work / STAGE_DIRS["control"]
    state = _train_sft_chunks(args, out, work / STAGE_DIRS["sft"] / "model", plan, plateau=False)
    state["matched_s"], state["s_per_step"] = grpo_s, state["train_s"] / steps
    write_json(out / "chunks.json", state)


# ---- evaluation ----------------------------------------------------------------------------------


def model_of(args: argparse.Namespace, arm: str) -> Path:
    from visioncreator.rl.train import model_dir_for

    if arm == "initial":
        return model_dir_for(policy_model(args))
    return Path(args.work) / STAGE_DIRS[arm] / "model"


def phase_eval(args: argparse.Namespace) -> None:
    """Every arm at every tool seed; each trajectory kept (``evals/ARM-seedK.jsonl``), each point in a JSON."""
    work = Path(args.work)
    for arm in args.arms:
        model = model_of(args, arm)
        if not (model / "config.json").is_file():
            log(f"eval: no model for {arm} yet ({model}); skipped")
            continue
        for seed in args.tool_seeds:
            path = work / "evals" / f"{arm}-seed{seed}.json"
            if path.is_file():
                continue
            log(f"evaluating {arm} at tool seed {seed} ...")

            def done(event: dict[str, Any], arm: str = arm) -> None:
                log(f"  {arm} {event['task']} success={event['success']:.0f}")

            point = evaluate(
                model, held_out(args), policy=policy_model(args), store=work / "store", after=arm, seed=0,
                tool_seed=seed, max_turns=args.max_turns, tools=brief_tools, progress=done,
                records=work / "evals" / f"{arm}-seed{seed}.jsonl",
            )  # fmt: skip
            write_json(path, json.loads(point.model_dump_json()))
            log(f"{arm} seed {seed}: success {point.success_rate:.3f} ({point.wall_s:.0f} s, {point.n} trajectories)")


def phase_report(args: argparse.Namespace) -> None:
    from _rl_report import write_benchmark_report

    write_benchmark_report(Path(args.work), arms=args.arms, tool_seeds=args.tool_seeds, full=full_scale(args))


def full_scale(args: argparse.Namespace) -> dict[str, Any]:
    """The full run's sizes, for the cost estimate."""
    return {
        "held_out": 48, "tool_seeds": 2, "arms": 4, "sft_max_epochs": args.sft_max_epochs, "sft_batch": args.sft_batch,
        "budget_min": 60.0,
    }  # fmt: skip


PHASES = {
    "data": phase_data,
    "sft": phase_sft,
    "grpo": phase_grpo,
    "control": phase_control,
    "eval": phase_eval,
    "report": phase_report,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--work", required=True, help="working directory (every phase resumes from what is in it)")
    add("--phase", choices=(*PHASES, "all"), default="all")
    add("--held-out", type=int, default=48, help="held-out single-image tasks")
    add("--eval-limit", type=int, default=None, help="evaluate only the first N held-out tasks (smoke runs)")
    add("--tool-seeds", type=int, nargs="+", default=[0, 1], help="tool seeds of the held-out evaluation")
    add("--fault-rate", type=float, default=0.5)
    add("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    add("--train-tasks", type=int, default=200)
    add("--max-new-tokens", type=int, default=144)
    add("--max-turns", type=int, default=8)
    add("--sft-batch", type=int, default=4)
    add("--sft-lr", type=float, default=1e-4)
    add("--sft-chunk", type=int, default=10, help="SFT steps between loss-plateau checks")
    add("--sft-plateau", type=float, default=0.05, help="stop when a chunk's mean loss improves by less (relative)")
    add("--sft-max-epochs", type=float, default=3.0)
    add("--sft-max-steps", type=int, default=None, help="cap on SFT steps (smoke runs); default the epochs' steps")
    add("--budget-min", type=float, default=60.0, help="GRPO training minutes, CPU / threads (the control: the same)")
    add("--grpo-chunk", type=int, default=5, help="GRPO steps between budget checks")
    add("--grpo-max-steps", type=int, default=None, help="stop GRPO after this many steps instead (smoke runs)")
    add("--control-max-steps", type=int, default=None, help="cap on the control's steps (smoke runs only)")
    add("--grpo-generations", type=int, default=4)
    add("--grpo-groups", type=int, default=2, help="groups per optimiser step")
    add("--grpo-lr", type=float, default=5e-6)
    add("--grpo-beta", type=float, default=0.02, help="KL anchor to the SFT model")
    add("--threads", type=int, default=1, help="torch threads (training and generation)")
    add(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute precision of training (mixed) and generation; bfloat16 runs on this CPU's AMX units",
    )
    args = parser.parse_args()
    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    for phase in PHASES if args.phase == "all" else (args.phase,):
        began = time.perf_counter()
        PHASES[phase](args)
        log(f"phase {phase}: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
