"""The report of ``rl_learning.py``: success with intervals, paired tests, curves, reflection, HTML, cost.

Reads what the phases left in the work folder and writes ``results.json``, ``curves.png`` and
``report/`` (one evals run folder per arm with its ``report.html``, and ``index.html`` over them).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visioncreator.evals import ReflectionRecord, TaskResult, classify_reflections, write_report
from visioncreator.rl import TrajectoryRecord, read_records
from visioncreator.rl.train import bootstrap_interval, mcnemar_exact, paired_bootstrap, wilson_interval

STAGE_DIRS = {"sft": "01-sft", "grpo": "02-grpo", "control": "03-control"}
PAIRS = (("grpo", "control"), ("grpo", "sft"), ("control", "sft"))
"""The paired comparisons; the first is the one the benchmark is about."""


def _records(work: Path, arm: str, tool_seeds: Sequence[int]) -> list[TrajectoryRecord]:
    out: list[TrajectoryRecord] = []
    for seed in tool_seeds:
        path = work / "evals" / f"{arm}-seed{seed}.jsonl"
        if (work / "evals" / f"{arm}-seed{seed}.json").is_file():  # a finished evaluation only
            out += [r for r in read_records(path) if r.tool_seed == seed]
    return out


def _success(record: TrajectoryRecord) -> float:
    return float(record.reward_details.get("outcome", {}).get("success", 0.0))


def _key(record: TrajectoryRecord) -> tuple[str, int]:
    return record.task_id, record.tool_seed


def success_row(records: Sequence[TrajectoryRecord]) -> dict[str, Any]:
    """Success rate, Wilson 95% interval, and a bootstrap interval resampling tasks (their seeds together)."""
    wins = [_success(r) for r in records]
    k, n = int(sum(wins)), len(wins)
    boot = bootstrap_interval(wins, clusters=[r.task_id for r in records]) if n else (math.nan, math.nan)
    rewards = {name: sum(r.rewards.get(name, 0.0) for r in records) / n for name in ("total", "plan", "reflection")}
    return {"n": n, "successes": k, "rate": k / n if n else math.nan, "wilson": wilson_interval(k, n),
            "bootstrap_tasks": boot, "mean_rewards": rewards}  # fmt: skip


def paired(a: Sequence[TrajectoryRecord], b: Sequence[TrajectoryRecord]) -> dict[str, Any] | None:
    """A vs B on the task x tool-seed pairs both ran: exact McNemar and the paired bootstrap over tasks."""
    theirs = {_key(r): _success(r) for r in b}
    keys = [_key(r) for r in a if _key(r) in theirs]
    if not keys:
        return None
    ours = {_key(r): _success(r) for r in a}
    xa, xb = [ours[k] for k in keys], [theirs[k] for k in keys]
    test = mcnemar_exact(xa, xb)
    boot = paired_bootstrap(xa, xb, clusters=[k[0] for k in keys])
    return {
        "pairs": len(keys), "difference": boot.difference, "interval": (boot.low, boot.high),
        "bootstrap_p": boot.p_value, "mcnemar_p": test.p_value, "only_a": test.only_a, "only_b": test.only_b,
    }  # fmt: skip


def reflection_row(records: Sequence[TrajectoryRecord]) -> dict[str, Any]:
    """Good / under / over verdicts (the evals classification) and the redo rate on faulty images."""
    counts = {"good": 0, "under": 0, "over": 0, "unknown": 0}
    faulty = redone = 0
    for record in records:
        verdicts = classify_reflections(record)
        for v in verdicts:
            counts[v.category] += 1
        rejected = {v.image for v in verdicts if v.verdict != "accept"}
        for call in record.images_made(by="policy"):
            truth = record.truths.get(call.handle or "")
            if truth and truth.get("faults"):
                faulty += 1
                redone += call.handle in rejected
    return {**counts, "faulty_images": faulty, "redone": redone, "redo_rate": redone / faulty if faulty else math.nan}


def _task_result(record: TrajectoryRecord, verdicts: list[ReflectionRecord], trajectory: str) -> TaskResult:
    outcome = record.reward_details.get("outcome", {})
    faulty = [
        c.handle for c in record.images_made(by="policy") if (record.truths.get(c.handle or "") or {}).get("faults")
    ]
    return TaskResult(
        id=f"{record.task_id}@seed{record.tool_seed}", split=record.task.split, request=record.task.request,
        success=_success(record) == 1.0, checklist_score=record.rewards.get("outcome", 0.0),
        items=outcome.get("failed", []), answer=list(record.answer), answer_repaired=record.answer_repaired,
        termination=record.termination, plan=record.plan, reflections=verdicts, faults_injected=len(faulty),
        faults_caught=sum(v.verdict != "accept" and v.image in faulty for v in verdicts), trajectory=trajectory,
    )  # fmt: skip


def write_arm_report(work: Path, arm: str, records: Sequence[TrajectoryRecord]) -> Path:
    """An evals run folder of one arm's trajectories (``results.jsonl``, ``trajectories/``) and its report.html."""
    run = work / "report" / arm
    (run / "trajectories").mkdir(parents=True, exist_ok=True)
    lines = []
    for record in records:
        name = f"trajectories/{record.task_id}-seed{record.tool_seed}.json"
        (run / name).write_text(record.model_dump_json(indent=1))
        lines.append(_task_result(record, classify_reflections(record), name).model_dump_json())
    (run / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    store = run / "store"
    if not store.exists():
        os.symlink(os.path.relpath(work / "store", run), store)
    return write_report(run)


def _curves(work: Path) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {}
    for arm, folder in STAGE_DIRS.items():
        path = work / folder / "chunks.json"
        if path.is_file():
            history = json.loads(path.read_text()).get("log_history", [])
            out[arm] = [{k: float(v) for k, v in e.items() if isinstance(v, int | float)} for e in history
                        if "step" in e and "train_runtime" not in e]  # fmt: skip
    return out


def write_curves(work: Path, curves: dict[str, list[dict[str, float]]]) -> Path:
    """``curves.png``: GRPO's reward per step split into plan and reflect rewards; SFT and control loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    grpo = curves.get("grpo", [])
    for key, label in (("reward", "total (weighted)"), ("rewards/plan/mean", "plan"),
                       ("rewards/reflection/mean", "reflection"), ("rewards/outcome/mean", "outcome")):  # fmt: skip
        rows = [r for r in grpo if key in r]
        left.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=label)
    left.set(title="GRPO reward per step", xlabel="optimiser step", ylabel="mean reward", ylim=(0, 1))
    left.legend()
    offset = max((r["step"] for r in curves.get("sft", [])), default=0.0)
    for arm, shift in (("sft", 0.0), ("control", offset)):
        rows = [r for r in curves.get(arm, []) if "loss" in r]
        right.plot([r["step"] + shift for r in rows], [r["loss"] for r in rows], marker=".", label=arm)
    right.set(title="SFT loss (the control continues SFT)", xlabel="SFT step", ylabel="loss")
    right.legend()
    fig.tight_layout()
    path = work / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stage_cost(work: Path, arm: str) -> dict[str, Any]:
    path = work / STAGE_DIRS[arm] / "chunks.json"
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    steps = state["chunks"][-1]["step"] if state["chunks"] else 0
    # train_s: CPU seconds over the threads (rl_learning.Clock), what budgets and matching use; wall beside it
    return {"steps": steps, "train_s": state["train_s"], "train_wall_s": state.get("train_wall_s"),
            "s_per_step": state.get("s_per_step"), "stopped": state.get("stopped"),
            "matched_s": state.get("matched_s")}  # fmt: skip


def _decode_rate(work: Path, arms: Sequence[str], tool_seeds: Sequence[int]) -> float:
    """Completion tokens per second of policy time over every kept evaluation turn (prefill included)."""
    turns = [t for arm in arms for r in _records(work, arm, tool_seeds) for t in r.turns if t.completion_token_ids]
    seconds = sum(t.latency_s for t in turns)
    return sum(len(t.completion_token_ids or ()) for t in turns) / seconds if seconds else math.nan


def _expert_tokens(work: Path) -> float:
    """Mean completion tokens per expert trajectory, in SmolLM2's tokenizer: what a converged policy writes."""
    from transformers import AutoTokenizer

    from visioncreator.rl.train import PolicyModel, model_dir_for

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir_for(PolicyModel(model="smollm2"))))
    records = read_records(work / "expert.jsonl")
    return sum(len(tokenizer(t.text)["input_ids"]) for r in records for t in r.turns) / max(1, len(records))


def cost(work: Path, arms: Sequence[str], tool_seeds: Sequence[int], full: dict[str, Any]) -> dict[str, Any]:
    """Measured seconds per eval trajectory, SFT step and GRPO step, and what the full run costs at those.

    A barely trained model (a smoke run) writes other trajectories than a converged one, so the
    eval estimate is the expert's tokens per trajectory at the measured decoding rate.
    """
    evals = [json.loads(p.read_text()) for p in sorted((work / "evals").glob("*-seed*.json"))]
    per_traj = {p["after"]: p["wall_s"] / p["n"] for p in evals if p["n"]}
    rate, expert_tokens = _decode_rate(work, arms, tool_seeds), _expert_tokens(work)
    stages = {arm: _stage_cost(work, arm) for arm in STAGE_DIRS}
    sft_set = sum(1 for r in read_records(work / "expert.jsonl") if _success(r) == 1.0)
    sft_steps = math.ceil(full["sft_max_epochs"] * math.ceil(sft_set / full["sft_batch"]))
    s_traj = expert_tokens / rate if rate == rate else math.nan
    estimate = {
        "eval_s": full["arms"] * full["held_out"] * full["tool_seeds"] * s_traj,
        "sft_s_at_most": sft_steps * (stages["sft"].get("s_per_step") or math.nan),
        "grpo_s": full["budget_min"] * 60, "control_s": full["budget_min"] * 60,
    }  # fmt: skip
    known = {k: v for k, v in estimate.items() if v == v}  # NaN: a step not measured
    return {
        "s_per_eval_trajectory": per_traj, "tokens_per_s": rate, "expert_tokens_per_trajectory": expert_tokens,
        "s_per_converged_trajectory": s_traj, "stages": stages, "sft_set": sft_set, "full_sft_steps": sft_steps,
        "full_estimate_s": estimate, "limiting": max(known, key=lambda k: known[k]) if known else None,
    }  # fmt: skip


def _index(work: Path, summary: dict[str, Any], pages: dict[str, Path]) -> Path:
    rows = "".join(
        f"<tr><td><a href='{pages[a].relative_to(work / 'report')}'>{a}</a></td><td>{s['n']}</td>"
        f"<td>{s['rate']:.3f}</td><td>{s['wilson'][0]:.3f}-{s['wilson'][1]:.3f}</td></tr>"
        for a, s in summary["success"].items()
        if a in pages
    )
    head = "<tr><th>arm</th><th>n</th><th>success</th><th>Wilson 95%</th></tr>"
    dump = json.dumps(summary, indent=1, default=str)
    body = f"<h1>rl_learning</h1><table border=1>{head}{rows}</table><img src='../curves.png'><pre>{dump}</pre>"
    path = work / "report" / "index.html"
    path.write_text(f"<!doctype html><meta charset=utf-8><title>rl_learning</title>{body}")
    return path


def write_benchmark_report(work: Path, *, arms: Sequence[str], tool_seeds: Sequence[int], full: dict[str, Any]) -> None:
    """Print the tables and write ``results.json``, ``curves.png`` and ``report/``."""
    records = {arm: _records(work, arm, tool_seeds) for arm in arms}
    records = {arm: rs for arm, rs in records.items() if rs}
    summary: dict[str, Any] = {"success": {a: success_row(rs) for a, rs in records.items()}}
    summary["paired"] = {
        f"{a} vs {b}": paired(records[a], records[b]) for a, b in PAIRS if a in records and b in records
    }
    summary["reflection"] = {a: reflection_row(rs) for a, rs in records.items()}
    summary["cost"] = cost(work, arms, tool_seeds, full)
    print("\n== held-out success (task x tool seed), 95% intervals")
    print(
        f"{'arm':8s} {'n':>4s} {'success':>8s} {'Wilson':>14s} {'bootstrap':>14s} "
        f"{'reward':>7s} {'plan':>5s} {'refl':>5s}"
    )
    for arm, s in summary["success"].items():
        w, b, m = s["wilson"], s["bootstrap_tasks"], s["mean_rewards"]
        print(f"{arm:8s} {s['n']:4d} {s['rate']:8.3f} {w[0]:6.3f}-{w[1]:6.3f} {b[0]:6.3f}-{b[1]:6.3f} "
              f"{m['total']:7.3f} {m['plan']:5.2f} {m['reflection']:5.2f}")  # fmt: skip
    print("\n== paired (A - B on the same task x tool seed)")
    for name, p in summary["paired"].items():
        if p:
            print(f"{name:18s} pairs {p['pairs']:3d} diff {p['difference']:+.3f} [{p['interval'][0]:+.3f}, "
                  f"{p['interval'][1]:+.3f}] McNemar p={p['mcnemar_p']:.4f} ({p['only_a']} vs {p['only_b']}) "
                  f"bootstrap p={p['bootstrap_p']:.4f}")  # fmt: skip
    print("\n== reflection verdicts and redo rate on faulty images")
    for arm, r in summary["reflection"].items():
        print(f"{arm:8s} good {r['good']:3d} under {r['under']:3d} over {r['over']:3d}  "
              f"faulty images {r['faulty_images']:3d} redone {r['redone']:3d} ({r['redo_rate']:.2f})")  # fmt: skip
    c = summary["cost"]
    print("\n== cost (measured here) and the full run at those rates")
    print(f"s per eval trajectory: {json.dumps({k: round(v, 1) for k, v in c['s_per_eval_trajectory'].items()})}")
    print(f"decoding {c['tokens_per_s']:.1f} completion tokens/s; the expert writes "
          f"{c['expert_tokens_per_trajectory']:.0f} per trajectory: "
          f"{c['s_per_converged_trajectory']:.0f} s per converged eval trajectory")  # fmt: skip
    for arm, s in c["stages"].items():
        if s:
            wall = f" ({s['train_wall_s']:.0f} s wall)" if s.get("train_wall_s") else ""
            print(f"{arm:8s} {s['steps']} steps, {s['train_s']:.0f} s CPU{wall}, {s['s_per_step']:.1f} s/step  "
                  f"{s['stopped'] or ''}")  # fmt: skip
    rounded = {k: round(v) if v == v else None for k, v in c["full_estimate_s"].items()}
    print(f"full run estimate (s): {json.dumps(rounded)}; "
          f"limiting: {c['limiting']} (SFT set {c['sft_set']}, at most {c['full_sft_steps']} SFT steps)")  # fmt: skip
    write_curves(work, _curves(work))
    pages = {arm: write_arm_report(work, arm, rs) for arm, rs in records.items()}
    index = _index(work, summary, pages)
    (work / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nwrote {work / 'results.json'}, {work / 'curves.png'}, {index}")
