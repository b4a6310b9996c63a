"""The report of ``benchmarks/gpu_learning.py``: paired statistics of the arms, reflection counts, curves (PNG).

Statistics from :mod:`visioncreator.rl.train.significance` (pure Python: the GPU image has no
scipy guarantee): Wilson 95% intervals of each arm's success, the exact McNemar test of two arms on
the same (task, tool seed) pairs, and a paired bootstrap of the difference (a task's seeds together).
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Outcomes = Mapping[tuple[str, int], float]
"""(task id, tool seed) -> success (1.0 or 0.0) of one arm."""


def compare(first: Outcomes, second: Outcomes) -> dict[str, Any]:
    """``first`` against ``second`` on the pairs both evaluated: difference, McNemar, paired bootstrap.

    The bootstrap resamples a task's pairs (its tool seeds) together
    (:func:`visioncreator.rl.train.significance.paired_bootstrap` with the task ids as clusters).
    """
    from visioncreator.rl.train import mcnemar_exact, paired_bootstrap

    keys = sorted(set(first) & set(second))
    a, b = [first[k] for k in keys], [second[k] for k in keys]
    test = mcnemar_exact(a, b)
    boot = paired_bootstrap(a, b, clusters=[k[0] for k in keys]) if keys else None
    return {
        "pairs": len(keys),
        "difference": boot.difference if boot else 0.0,
        "only_first": test.only_a,
        "only_second": test.only_b,
        "mcnemar_p": test.p_value,
        "bootstrap_95": [boot.low, boot.high] if boot else [0.0, 0.0],
        "bootstrap_p": boot.p_value if boot else 1.0,
    }


def arm_summary(records: Sequence[Any], keys: set[tuple[str, int]]) -> dict[str, Any]:
    """Success with its interval, mean rewards, reflection counts and the redo rate on faulty images."""
    from visioncreator.rl.train import wilson_interval

    kept = [r for r in records if (r.task_id, r.tool_seed) in keys]
    n = len(kept)
    wins = sum(_success(r) for r in kept)
    counts = {k: 0 for k in ("tp", "tn", "fp", "fn", "unjudged")}
    for r in kept:
        details = r.reward_details.get("reflection", {})
        for k in counts:
            counts[k] += int(details.get(k, 0))
    faulty = counts["tp"] + counts["fn"]  # faulty images a reflection judged
    names = sorted({k for r in kept for k in r.rewards})
    return {
        "n": n,
        "success": wins / n if n else 0.0,
        "success_95": list(wilson_interval(int(wins), n)),
        "mean_rewards": {k: sum(r.rewards.get(k, 0.0) for r in kept) / n for k in names} if n else {},
        "reflections": {
            "good": counts["tp"] + counts["tn"],
            "under": counts["fn"] + counts["unjudged"],
            "over": counts["fp"],
            **counts,
        },
        "redo_rate_faulty": counts["tp"] / faulty if faulty else 0.0,
    }


def outcomes(records: Sequence[Any]) -> dict[tuple[str, int], float]:
    """(task id, tool seed) -> success of each record."""
    return {(r.task_id, r.tool_seed): _success(r) for r in records}


def _success(record: Any) -> float:
    return float(record.reward_details.get("outcome", {}).get("success", 0.0))


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path | None:
    """One PNG: loss per step of each training run, and GRPO's reward per step split into its parts."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    offset = {"control": max((e["step"] for e in curves.get("sft", ())), default=0)}  # control continues SFT
    for name, log in curves.items():
        rows = [e for e in log if "loss" in e and "step" in e]
        if rows and name != "grpo":  # GRPO's loss is not a likelihood: its rewards are on the right
            left.plot([e["step"] + offset.get(name, 0) for e in rows], [e["loss"] for e in rows], label=name)
    left.set(title="SFT loss (the control continues it)", xlabel="SFT step", yscale="log")
    left.legend()
    grpo = [e for e in curves.get("grpo", ()) if "reward" in e]
    for key in sorted({k for e in grpo for k in e if k == "reward" or k.startswith("rewards/")}):
        if key.endswith("/std"):
            continue
        rows = [e for e in grpo if key in e]
        right.plot([e["step"] for e in rows], [e[key] for e in rows], label=key.removeprefix("rewards/"))
    right.set(title="GRPO reward per step (plan, reflect, ... parts)", xlabel="step")
    if grpo:
        right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(arms: Mapping[str, Mapping[str, Any]], tests: Mapping[str, Mapping[str, Any]]) -> str:
    """The printed summary: one line per arm, one per comparison."""
    lines = [f"{'arm':10s} {'n':>4s} {'success':>8s} {'95% interval':>15s} {'reward':>7s} "
             f"{'good':>5s} {'under':>5s} {'over':>5s} {'redo|faulty':>11s}"]  # fmt: skip
    for name, a in arms.items():
        low, high = a["success_95"]
        r = a["reflections"]
        lines.append(
            f"{name:10s} {a['n']:4d} {a['success']:8.3f} {f'[{low:.3f}, {high:.3f}]':>15s} "
            f"{a['mean_rewards'].get('total', 0.0):7.3f} {r['good']:5d} {r['under']:5d} {r['over']:5d} "
            f"{a['redo_rate_faulty']:11.3f}"
        )
    for name, t in tests.items():
        low, high = t["bootstrap_95"]
        lines.append(
            f"{name}: {t['difference']:+.3f} on {t['pairs']} pairs (only first {t['only_first']}, only second "
            f"{t['only_second']}); McNemar p={t['mcnemar_p']:.4f}; bootstrap 95% [{low:+.3f}, {high:+.3f}] "
            f"p={t['bootstrap_p']:.4f}"
        )
    return "\n".join(lines)


def environment(device: str, dtype: str) -> dict[str, Any]:
    """Versions of what ran, and the GPU."""
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "device": device, "dtype": dtype}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "langgraph", "visioncreator"):
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    return info
