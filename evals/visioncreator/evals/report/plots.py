"""The report's plots: matplotlib figures (Agg, no pyplot state) saved as PNG files.

matplotlib is imported inside ``write_plots`` only: ``import visioncreator.evals`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from visioncreator.evals.report.summary import CATEGORIES, SplitSummary, Summary, ordered_splits
from visioncreator.evals.results import TaskResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Plot", "write_plots"]

# One colour per reflection category, the same in every plot and in the page's tables.
CATEGORY_COLORS = {"good": "#3a7d44", "under": "#c0392b", "over": "#d68910", "unknown": "#999999"}
_DPI = 100


class Plot(BaseModel):
    """One saved plot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """File stem, e.g. ``scores``."""
    title: str
    path: Path


def _rows(summary: Summary) -> list[SplitSummary]:
    rows = list(summary.splits.values())
    return [*rows, summary.overall] if len(rows) > 1 else rows


def _scores(fig: Figure, summary: Summary) -> None:
    rows = _rows(summary)
    ax = fig.add_subplot()
    xs = range(len(rows))
    width = 0.38
    bars = ax.bar([x - width / 2 for x in xs], [r.success_rate for r in rows], width, label="success rate")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    bars = ax.bar([x + width / 2 for x in xs], [r.checklist_mean for r in rows], width, label="checklist score")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(list(xs), [f"{r.split}\n(n={r.tasks})" for r in rows])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("mean over tasks")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, ncols=2)


def _reflections(fig: Figure, summary: Summary) -> None:
    rows = _rows(summary)
    ax = fig.add_subplot()
    left = [0.0] * len(rows)
    ys = list(range(len(rows)))
    for category in CATEGORIES:
        widths = [r.reflections.fractions[category] for r in rows]
        ax.barh(ys, widths, left=left, color=CATEGORY_COLORS[category], label=category)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(ys, [f"{r.split} ({r.reflections.total})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of reflections (count in brackets)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=4, fontsize=8)


def _cost(fig: Figure, summary: Summary) -> None:
    rows = _rows(summary)
    xs = list(range(len(rows)))
    width = 0.38
    calls, seconds = fig.subplots(1, 2)
    calls.bar([x - width / 2 for x in xs], [r.cost.mean.tool_calls for r in rows], width, label="tool calls")
    calls.bar([x + width / 2 for x in xs], [r.cost.mean.policy_calls for r in rows], width, label="policy calls")
    calls.set_title("calls per task", fontsize=9)
    seconds.bar([x - width / 2 for x in xs], [r.cost.mean.generator_s for r in rows], width, label="generator s")
    seconds.bar([x + width / 2 for x in xs], [r.cost.mean.wall_s for r in rows], width, label="wall s")
    seconds.set_title("seconds per task", fontsize=9)
    for ax in (calls, seconds):
        ax.set_xticks(xs, [r.split for r in rows], fontsize=8)
        ax.legend(fontsize=7)


def _checklist_histogram(fig: Figure, results: Sequence[TaskResult]) -> None:
    ax = fig.add_subplot()
    bins = [i / 10 for i in range(11)]
    for split in ordered_splits(r.split for r in results):
        scores = [r.checklist_score for r in results if r.split == split]
        ax.hist(scores, bins=bins, histtype="step", linewidth=1.6, label=f"{split} (n={len(scores)})")
    ax.set_xlim(0, 1)
    ax.set_xlabel("checklist score")
    ax.set_ylabel("tasks")
    ax.legend(fontsize=8)


def _judge(fig: Figure, summary: Summary) -> None:
    rows = [r for r in _rows(summary) if r.judge is not None]
    ax = fig.add_subplot()
    xs = list(range(len(rows)))
    width = 0.27
    for offset, field in zip(
        (-width, 0.0, width), ("semantic_consistency", "perceptual_quality", "overall"), strict=True
    ):
        values = [getattr(r.judge, field) or 0.0 for r in rows]
        ax.bar([x + offset for x in xs], values, width, label=field.replace("_", " "))
    ax.set_xticks(xs, [r.split for r in rows])
    ax.set_ylim(0, 10)
    ax.set_ylabel("mean judge score (0-10)")
    ax.legend(fontsize=8)


def write_plots(summary: Summary, results: Sequence[TaskResult], out: Path) -> list[Plot]:
    """Draw the report's plots into ``out`` (created), one PNG each; none for a run without results.

    Args:
        summary: The run's summary.
        results: The run's task results (for distributions the summary does not keep).
        out: Folder for the PNG files; files of the same name are replaced.

    Returns:
        The plots written, in the order the page shows them.

    """
    if not results:
        return []
    try:
        from matplotlib.figure import Figure
    except ImportError:  # the evals extra is not installed: the report goes without plots
        return []

    out.mkdir(parents=True, exist_ok=True)
    plots: list[Plot] = []

    def save(name: str, title: str, fig: Figure) -> None:
        fig.suptitle(title, fontsize=11)
        path = out / f"{name}.png"
        fig.savefig(path, format="png", dpi=_DPI)
        plots.append(Plot(name=name, title=title, path=path))

    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    _scores(fig, summary)
    save("scores", "Success rate and checklist score per split", fig)
    fig = Figure(figsize=(6.4, 0.9 + 0.45 * len(_rows(summary))), layout="constrained")
    _reflections(fig, summary)
    save("reflections", "Reflection distribution per split", fig)
    fig = Figure(figsize=(7.2, 3.4), layout="constrained")
    _cost(fig, summary)
    save("cost", "Cost per task", fig)
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    _checklist_histogram(fig, results)
    save("checklist", "Checklist score distribution", fig)
    if summary.overall.judge is not None:
        fig = Figure(figsize=(6.4, 3.4), layout="constrained")
        _judge(fig, summary)
        save("judge", "Vision judge scores per split", fig)
    return plots
