"""The learning benchmark on one GPU, in at most 8 minutes: a model built from scratch, then SFT, SFT-control, GRPO.

The packaged SmolLM2 (93 MB) cannot travel to a lent GPU machine, so this run builds its starting
model there (:func:`visioncreator.rl.train.build_scratch_model`: a random Qwen2 whose tokenizer is
trained on the expert trajectories' text) and SFT-trains it from scratch on those trajectories.
Then the arms of ``benchmarks/rl_learning.py``, on the same held-out tasks:

1. ``tasks``: held-out single-image tasks of the built-in synthetic suite (``--held-out``), evaluated
   at every ``--tool-seeds`` (other injected faults); training tasks from other suite seeds, no request
   equal to a held-out one. Fault rate ``--fault-rate`` everywhere;
2. ``expert``: the scripted expert on the training tasks (its successful trajectories are the SFT set);
3. ``model``: the scratch model (``--size``), its tokenizer trained on the expert's text;
4. ``sft``: SFT from scratch (``train_sft``), its steps from a short timing run and the phase's budget;
5. ``grpo``: GRPO on top of SFT (``train_grpo``: branched at reflect, shared tool seeds, per-turn
   credit), in chunks resumed from their checkpoints until its budget is spent (constant learning rate);
6. ``control``: SFT continued from the SFT model for the same wall time as GRPO took (same data);
7. ``eval``: SFT, control and GRPO, greedy, all at once, on every (held-out task, tool seed) pair,
   within the evaluation budget; the statistics use the pairs every arm finished.

Every phase has a wall-time share of ``--budget-s``. Output (``--out``, default ``$OUT``):
``gpu_learning.json``, ``curves.png`` and each arm's evaluation trajectories (``eval-ARM.jsonl``).
A dry run of every phase: ``--device cpu --tiny``. On a GPU: ``bash benchmarks/gpu_learning.sh``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent))  # after the stdlib: nothing here shadows it
import gpu_learning_report as report  # type: ignore[import-not-found,import-untyped,unused-ignore]
from _brief_tools import brief_tools  # type: ignore[import-not-found,unused-ignore]  # the CPU benchmark's tools
from _learning_tasks import disjoint_training_tasks  # type: ignore[import-not-found,unused-ignore]
from visioncreator.rl import CollectConfig, TrajectoryRecord, collect_to, read_records
from visioncreator.rl.train import GRPOStage, PolicyModel, SFTStage, TaskSource

ARMS = ("sft", "control", "grpo")
SHARES = {"sft": 0.34, "grpo": 0.22, "control": 0.22, "eval": 0.22}  # of the time left once the model is built
_STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:6.1f} s] {message}", flush=True)


def known(model: Any, **fields: Any) -> dict[str, Any]:
    """The fields ``model`` has; the others are logged and left out (a checkout without a helper's field)."""
    missing = sorted(k for k in fields if k not in model.model_fields)
    if missing:
        log(f"note: {model.__name__} has no {', '.join(missing)} here; running without")
    return {k: v for k, v in fields.items() if k in model.model_fields}


def policy(args: argparse.Namespace, model: str) -> PolicyModel:
    fields = known(PolicyModel, device=args.device, dtype=args.dtype)
    threads = 1 if args.device == "cpu" else None
    return PolicyModel(
        model=model, max_new_tokens=args.max_new_tokens, temperature=1.0, torch_threads=threads, **fields
    )


# ---- data and model ---------------------------------------------------------------------------


def make_tasks(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    from visioncreator.evals import build_synthetic_suite, write_suite

    held_path, train_path = work / "held-out.jsonl", work / "train.jsonl"
    held = [t for t in asyncio.run(build_synthetic_suite(per_split=max(args.held_out, 20), seed=0))
            if t.split == "single"][: args.held_out]  # fmt: skip
    train = disjoint_training_tasks((t.request for t in held), args.train_tasks)
    write_suite(held, held_path)
    write_suite(train, train_path)
    log(f"tasks: {len(held)} held-out x {len(args.tool_seeds)} tool seeds, {len(train)} training (disjoint)")
    return held_path, train_path


def collect_expert(args: argparse.Namespace, work: Path, train: Path) -> list[TrajectoryRecord]:
    from visioncreator.graph import expert_policy
    from visioncreator.rl.train import load_tasks

    path = work / "expert.jsonl"
    config = CollectConfig(group_size=1, concurrency=16, seed=1, fault_rate=args.fault_rate, store=work / "store")

    async def run() -> None:
        async with brief_tools(config) as tools:
            tasks = load_tasks(TaskSource(suite=str(train), splits=("single",), fault_rate=args.fault_rate))
            await collect_to(path, tasks, policy=expert_policy(), tools=tools, config=config)

    asyncio.run(run())
    records = list(read_records(path))
    ok = [r for r in records if r.reward_details.get("outcome", {}).get("success", 0.0) == 1.0]
    redone = sum(1 for r in ok if r.reward_details.get("reflection", {}).get("tp", 0))
    log(f"expert: {len(records)} trajectories, {len(ok)} successful (the SFT set), {redone} of them redo an image")
    return ok


def build_model(args: argparse.Namespace, work: Path, expert: list[TrajectoryRecord]) -> Path:
    from visioncreator.rl.train import build_scratch_model, conversation_texts

    out = build_scratch_model(work / "model-0", texts=conversation_texts(expert), size=args.size, seed=0)
    info = json.loads((out / "scratch.json").read_text())
    log(f"model: {args.size} from scratch, {info['parameters'] / 1e6:.2f}M parameters, "
        f"tokenizer trained on {info['corpus_chars'] / 1e6:.2f}M characters")  # fmt: skip
    return out


# ---- training ---------------------------------------------------------------------------------


class Clock:
    """Progress callback that keeps the log and the time of every logged step."""

    def __init__(self, name: str) -> None:
        self.name, self.log, self.times = name, list[dict[str, Any]](), list[float]()

    def __call__(self, entry: dict[str, Any]) -> None:
        if "train_runtime" in entry:
            return
        self.log.append(entry)
        self.times.append(time.perf_counter())
        shown = " ".join(f"{k}={entry[k]:.4g}" for k in ("loss", "reward", "kl") if k in entry)
        if shown and (entry["step"] % 10 == 0 or "reward" in entry):
            log(f"{self.name} step {entry['step']}/{entry['max_steps']} {shown}")

    def step_s(self) -> float:
        """Seconds per step after the first (which also pays for set-up)."""
        steps = [e["step"] for e in self.log]
        if len(steps) < 2 or steps[-1] == steps[0]:
            return float("inf")
        return float((self.times[-1] - self.times[0]) / (steps[-1] - steps[0]))


def sft_stage(args: argparse.Namespace, name: str, steps: int, lr: float, schedule: str) -> SFTStage:
    warmup = max(1, steps // 20) if schedule != "constant" else 0
    return SFTStage(
        name=name, max_steps=steps, learning_rate=lr, batch_size=args.sft_batch, save_steps=max(steps, 1),
        logging_steps=1, trl={"lr_scheduler_type": schedule, "warmup_steps": warmup},
    )  # fmt: skip


def timed_sft(
    args: argparse.Namespace, work: Path, expert: list[TrajectoryRecord], start: Path, budget_s: float
) -> tuple[Path, Clock, float]:
    """SFT from scratch: a short timing run, then as many steps as the budget holds (cosine schedule)."""
    from visioncreator.rl.train import train_sft

    began = time.perf_counter()
    probe = Clock("sft-timing")
    train_sft(sft_stage(args, "timing", args.timing_steps, args.sft_lr, "constant"), policy(args, str(start)),
              output_dir=work / "sft-timing", records=expert, progress=probe)  # fmt: skip
    shutil.rmtree(work / "sft-timing", ignore_errors=True)
    step_s = probe.step_s() if math.isfinite(probe.step_s()) else budget_s  # no second logged step: one more
    left = budget_s - (time.perf_counter() - began) - args.stage_overhead_s
    steps = max(args.timing_steps, min(args.max_sft_steps, int(left / step_s)))
    log(f"sft: {step_s * 1000:.0f} ms a step (batch {args.sft_batch}) -> {steps} steps in {left:.0f} s")
    clock = Clock("sft")
    result = train_sft(sft_stage(args, "sft", steps, args.sft_lr, "cosine"), policy(args, str(start)),
                       output_dir=work / "sft", records=expert, progress=clock)  # fmt: skip
    log(f"sft: done in {time.perf_counter() - began:.0f} s, final loss {clock.log[-1].get('loss', float('nan')):.4g}")
    return result.model_dir, clock, step_s


def grpo_stage(args: argparse.Namespace, train: Path, steps: int) -> GRPOStage:
    groups = args.groups_per_step
    extra = known(GRPOStage, groups_per_step=groups, beta=args.beta, num_iterations=args.num_iterations)
    batch = None if "groups_per_step" in extra else groups * args.generations
    return GRPOStage(
        name="grpo", tasks=TaskSource(suite=str(train), splits=("single",), fault_rate=args.fault_rate),
        num_generations=args.generations, batch_size=batch, max_steps=steps, learning_rate=args.grpo_lr,
        branch_at="reflect", call_seeds="shared", credit="per_turn", max_turns=args.max_turns,
        max_completion_length=args.max_completion_length, save_steps=steps, logging_steps=1,
        trl={"lr_scheduler_type": "constant"}, **extra,
    )  # fmt: skip


def timed_grpo(args: argparse.Namespace, work: Path, train: Path, start: Path, budget_s: float) -> tuple[Path, Clock]:
    """GRPO from the SFT model: a first chunk of steps times them, a second (resumed) spends the budget."""
    from visioncreator.rl.train import train_grpo

    began, clock = time.perf_counter(), Clock("grpo")

    def chunk(steps: int) -> Path:
        result = train_grpo(grpo_stage(args, train, steps), policy(args, str(start)), model_dir=start,
                            output_dir=work / "grpo", progress=clock, tools=brief_tools)  # fmt: skip
        log(f"grpo: {steps} steps done, {time.perf_counter() - began:.0f} s of {budget_s:.0f}")
        return result.model_dir

    first = max(2, args.num_iterations)
    model = chunk(first)
    # The whole chunk over its steps: with num_iterations > 1 some steps reuse a batch and roll out nothing.
    per_step = max(time.perf_counter() - began - args.stage_overhead_s, 0.1) / first
    more = int((budget_s - (time.perf_counter() - began) - args.stage_overhead_s) / per_step)
    more = min(more, args.max_grpo_steps - first)
    log(f"grpo: {per_step:.1f} s a step -> {max(more, 0)} more")
    return (chunk(first + more) if more >= 1 else model), clock


def control(
    args: argparse.Namespace, work: Path, expert: list[TrajectoryRecord], start: Path, wall_s: float, step_s: float
) -> tuple[Path, Clock]:
    """SFT continued from the SFT model for the wall time GRPO took (same data, constant learning rate)."""
    from visioncreator.rl.train import train_sft

    steps = max(1, min(args.max_sft_steps, int((wall_s - args.stage_overhead_s) / step_s)))
    log(f"control: {steps} more SFT steps ({steps * step_s:.0f} s of steps, GRPO took {wall_s:.0f} s)")
    clock = Clock("control")
    result = train_sft(sft_stage(args, "control", steps, args.control_lr, "constant"), policy(args, str(start)),
                       output_dir=work / "control", records=expert, progress=clock)  # fmt: skip
    return result.model_dir, clock


# ---- evaluation -------------------------------------------------------------------------------


def eval_policy(args: argparse.Namespace, model_dir: Path) -> Any:
    """``model_dir`` as a greedy local policy on the device, loaded now (loading in threads at once is unsafe)."""
    from visioncreator.policy import LocalPolicySettings, TransformersPolicy

    wanted = {"batch_size": args.eval_concurrency, "batch_wait_s": 0.005}  # the batched local policy's, if any
    settings = LocalPolicySettings(
        device=args.device, dtype=args.dtype, temperature=0.0, max_new_tokens=args.max_new_tokens, seed=0,
        torch_threads=1 if args.device == "cpu" else None,
        **{k: v for k, v in wanted.items() if k in LocalPolicySettings.model_fields},
    )  # fmt: skip
    model = TransformersPolicy(model_dir, settings=settings)
    model.load()
    return model


async def _eval_arm(args: argparse.Namespace, work: Path, held: Path, arm: str, model: Any, seed: int) -> None:
    from visioncreator.rl.train import load_tasks

    config = CollectConfig(group_size=1, concurrency=args.eval_concurrency, seed=0, tool_seed=seed,
                           fault_rate=args.fault_rate, store=work / "store", max_turns=args.max_turns)  # fmt: skip
    tasks = load_tasks(TaskSource(suite=str(held), splits=("single",), fault_rate=args.fault_rate))
    async with brief_tools(config) as tools:
        await collect_to(work / f"eval-{arm}-seed{seed}.jsonl", tasks, policy=model, tools=tools, config=config)


def evaluate_arms(args: argparse.Namespace, work: Path, held: Path, models: dict[str, Path], budget_s: float) -> None:
    """Every arm at every tool seed at once, until done or out of budget (what finished is on disk)."""
    began = time.perf_counter()
    policies = {arm: eval_policy(args, model_dir) for arm, model_dir in models.items()}

    async def run() -> None:
        jobs = [_eval_arm(args, work, held, arm, m, s) for arm, m in policies.items() for s in args.tool_seeds]
        try:
            await asyncio.wait_for(asyncio.gather(*jobs), timeout=budget_s - (time.perf_counter() - began))
        except TimeoutError:
            log(f"eval: budget of {budget_s:.0f} s spent; the statistics use the pairs every arm finished")

    asyncio.run(run())
    log(f"eval: {time.perf_counter() - began:.0f} s")


# ---- main -------------------------------------------------------------------------------------


def finish(args: argparse.Namespace, work: Path, out: Path, result: dict[str, Any], clocks: list[Clock]) -> None:
    files = {arm: [work / f"eval-{arm}-seed{s}.jsonl" for s in args.tool_seeds] for arm in ARMS}
    records = {arm: [r for f in fs if f.is_file() for r in read_records(f)] for arm, fs in files.items()}
    keys = set.intersection(*(set(report.outcomes(rs)) for rs in records.values()))
    arms = {arm: report.arm_summary(rs, keys) for arm, rs in records.items()}
    outcome = {arm: {k: v for k, v in report.outcomes(rs).items() if k in keys} for arm, rs in records.items()}
    tests = {"grpo - control": report.compare(outcome["grpo"], outcome["control"]),
             "grpo - sft": report.compare(outcome["grpo"], outcome["sft"]),
             "control - sft": report.compare(outcome["control"], outcome["sft"])}  # fmt: skip
    result |= {"arms": arms, "tests": tests, "curves": {c.name: c.log for c in clocks}}
    result["wall_s"] = time.perf_counter() - _STARTED
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_learning.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    report.plot_curves({c.name: c.log for c in clocks}, out / "curves.png")
    for arm in ARMS:
        with (out / f"eval-{arm}.jsonl").open("w") as sink:
            for s in args.tool_seeds:
                path = work / f"eval-{arm}-seed{s}.jsonl"
                sink.write(path.read_text() if path.is_file() else "")
    print("\n" + report.table(arms, tests), flush=True)
    log(f"total {result['wall_s']:.0f} s; figures in {out}")


def run(args: argparse.Namespace) -> None:
    work, out = Path(args.work), Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result: dict[str, Any] = {"environment": report.environment(args.device, args.dtype), "args": dict(vars(args))}
    log(f"environment: {json.dumps(result['environment'])}")
    from visioncreator.policy import LocalPolicySettings

    if "batch_size" not in LocalPolicySettings.model_fields and not args.tiny:
        # One sequence at a time: 32 rollouts a step would spend GRPO's whole share on its first chunk.
        args.groups_per_step = min(args.groups_per_step, 2)
        log("note: this local policy generates one sequence at a time (no batch_size): 2 groups a GRPO step")
    held, train = make_tasks(args, work)
    expert = collect_expert(args, work, train)
    start = build_model(args, work, expert)
    left = args.budget_s - (time.perf_counter() - _STARTED) - args.report_reserve_s
    budget = {k: share * left for k, share in SHARES.items()}
    log("budgets: " + ", ".join(f"{k} {v:.0f} s" for k, v in budget.items()))
    phases: dict[str, Any] = {"scratch": json.loads((start / "scratch.json").read_text())}
    sft_model, sft_clock, step_s = timed_sft(args, work, expert, start, budget["sft"])
    phases |= {"sft_step_s": step_s, "sft_steps": sft_clock.log[-1]["step"], "sft": sft_clock.log}
    partial(out, result | {"phases": phases})
    began = time.perf_counter()
    grpo_model, grpo_clock = timed_grpo(args, work, train, sft_model, budget["grpo"])
    grpo_wall = time.perf_counter() - began
    phases |= {"grpo_wall_s": grpo_wall, "grpo_steps": grpo_clock.log[-1]["step"], "grpo": grpo_clock.log}
    partial(out, result | {"phases": phases})
    control_model, control_clock = control(args, work, expert, sft_model, grpo_wall, step_s)
    phases |= {"control_steps": control_clock.log[-1]["step"] if control_clock.log else 0}
    result["phases"] = {k: v for k, v in phases.items() if k not in ("sft", "grpo")}
    partial(out, result | {"phases": phases})
    eval_budget = args.budget_s - (time.perf_counter() - _STARTED) - args.report_reserve_s
    evaluate_arms(args, work, held, {"sft": sft_model, "control": control_model, "grpo": grpo_model}, eval_budget)
    finish(args, work, out, result, [sft_clock, grpo_clock, control_clock])


def partial(out: Path, result: dict[str, Any]) -> None:
    """What is measured so far, in ``gpu_learning.json``: a run cut short still returns it (``finish`` rewrites it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_learning.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add: Callable[..., Any] = parser.add_argument
    add("--device", choices=("cuda", "cpu"), default="cuda")
    add("--dtype", choices=("auto", "bfloat16", "float32"), default="auto", help="auto: bf16 on cuda, else fp32")
    add("--tiny", action="store_true", help="a CPU dry run of every phase: tiny sizes and budgets")
    add("--out", default=os.environ.get("OUT") or "out/gpu-learning", help="figures (default $OUT)")
    add("--work", default="/tmp/vc-gpu-learning", help="scratch folder (emptied first)")
    add("--budget-s", type=float, default=420.0, help="wall time of the whole run")
    add("--report-reserve-s", type=float, default=15.0)
    add("--stage-overhead-s", type=float, default=6.0, help="load, set-up and save of one training call")
    add("--held-out", type=int, default=48)
    add("--tool-seeds", type=int, nargs="+", default=[0, 1])
    add("--train-tasks", type=int, default=320)
    add("--fault-rate", type=float, default=0.5)
    add("--size", default="base", help="scratch model size (visioncreator.rl.train.SIZES)")
    add("--max-new-tokens", type=int, default=160)
    add("--max-turns", type=int, default=8)
    add("--sft-batch", type=int, default=16)
    add("--sft-lr", type=float, default=1e-3)
    add("--control-lr", type=float, default=1e-4)
    add("--timing-steps", type=int, default=6)
    add("--max-sft-steps", type=int, default=3000)
    add("--generations", type=int, default=4)
    add("--groups-per-step", type=int, default=8)
    add("--beta", type=float, default=0.04)
    add("--num-iterations", type=int, default=2)
    add("--grpo-lr", type=float, default=2e-5)
    add("--max-grpo-steps", type=int, default=200)
    add("--max-completion-length", type=int, default=4096)
    add("--eval-concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    if args.tiny:  # every phase, at the smallest scale that still exercises it
        args.size, args.held_out, args.train_tasks, args.sft_batch, args.generations = "tiny", 3, 12, 2, 2
        args.groups_per_step, args.max_new_tokens, args.max_turns, args.eval_concurrency = 1, 24, 3, 2
        args.timing_steps, args.max_sft_steps, args.max_grpo_steps, args.stage_overhead_s = 2, 8, 3, 2.0
    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device == "cuda" else "float32"
    return args


def main() -> None:
    args = parse()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_learning: --device cuda, but torch sees no GPU (use --device cpu for a dry run)")
    if args.device == "cuda" and "device" not in PolicyModel.model_fields:
        sys.exit("gpu_learning: this checkout's trainers run on the CPU only (PolicyModel has no device field)")
    torch.set_flush_denormal(True)
    import datasets  # type: ignore[import-untyped,unused-ignore]
    import transformers

    datasets.disable_progress_bars()  # the log keeps our lines, one per phase and every 10th step
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    run(args)


if __name__ == "__main__":
    main()
