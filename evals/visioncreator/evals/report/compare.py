"""Compare two eval runs: a text table of per-split deltas, and ``compare.html`` with both runs side by side."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from visioncreator.evals.report.html import (
    card_attrs,
    cost_html,
    esc,
    failed_items_html,
    filters_html,
    images_html,
    num,
    outcome_html,
    page,
    task_sort_key,
)
from visioncreator.evals.report.images import THUMBS_DIR, ImageRef, image_refs
from visioncreator.evals.report.summary import (
    CATEGORIES,
    SplitSummary,
    Summary,
    ordered_splits,
    read_errors,
    read_run,
    read_task_results,
    summarize_results,
)
from visioncreator.evals.results import TaskResult

__all__ = ["COMPARE_FILE", "compare_runs"]

COMPARE_FILE = "compare.html"


@dataclass(frozen=True, slots=True)
class _Metric:
    name: str
    get: Callable[[SplitSummary], float | None]
    digits: int
    better: int
    """+1: higher is better; -1: lower is better; 0: neither."""


_REFLECTION_BETTER = {"good": 1, "under": -1, "over": -1, "unknown": 0}
_METRICS = (
    _Metric("tasks", lambda s: s.tasks, 0, 0),
    _Metric("success rate", lambda s: s.success_rate, 3, 1),
    _Metric("checklist", lambda s: s.checklist_mean, 3, 1),
    _Metric("tool calls/task", lambda s: s.cost.mean.tool_calls, 2, -1),
    _Metric("policy calls/task", lambda s: s.cost.mean.policy_calls, 2, -1),
    _Metric("tokens/task", lambda s: s.cost.mean.tokens, 0, -1),
    _Metric("generator s/task", lambda s: s.cost.mean.generator_s, 3, -1),
    _Metric("wall s/task", lambda s: s.cost.mean.wall_s, 3, -1),
    _Metric("faults caught", lambda s: s.faults.catch_rate, 3, 1),
    *(
        _Metric(f"reflections {c}", lambda s, c=c: s.reflections.fractions[c], 3, _REFLECTION_BETTER[c])  # type: ignore[misc]
        for c in CATEGORIES
    ),
    _Metric("judge overall", lambda s: s.judge.overall if s.judge else None, 2, 1),
)


@dataclass(frozen=True, slots=True)
class _Row:
    split: str
    metric: str
    a: str
    b: str
    delta: str
    sign: int
    """+1 when B is better, -1 when worse, 0 when equal, not comparable or neither."""


def _split(summary: Summary, split: str) -> SplitSummary:
    if split == "all":
        return summary.overall
    return summary.splits.get(split) or SplitSummary(split=split)


def _rows(a: Summary, b: Summary) -> list[_Row]:
    rows = []
    for split in [*ordered_splits([*a.splits, *b.splits]), "all"]:
        sa, sb = _split(a, split), _split(b, split)
        for metric in _METRICS:
            va, vb = metric.get(sa), metric.get(sb)
            if va is None and vb is None:
                continue
            delta, sign = "", 0
            if va is not None and vb is not None:
                diff = vb - va
                sign = ((diff > 0) - (diff < 0)) * metric.better if abs(diff) > 10 ** -(metric.digits + 1) else 0
                delta = f"{diff:+.{metric.digits}f}"
            rows.append(_Row(split, metric.name, num(va, metric.digits), num(vb, metric.digits), delta, sign))
    return rows


def _status(a: TaskResult | None, b: TaskResult | None) -> str:
    if a is None:
        return "only-b"
    if b is None:
        return "only-a"
    if a.success != b.success:
        return "changed"
    return "score" if abs(a.checklist_score - b.checklist_score) > 1e-9 else "same"


_STATUS_ORDER = ("changed", "only-a", "only-b", "score", "same")
_STATUS_LABELS = {
    "changed": "outcome differs",
    "only-a": "only in A",
    "only-b": "only in B",
    "score": "checklist score differs",
    "same": "same outcome and score",
}


def _pairs(
    results_a: Sequence[TaskResult], results_b: Sequence[TaskResult]
) -> list[tuple[str, TaskResult | None, TaskResult | None]]:
    by_a = {r.id: r for r in results_a}
    by_b = {r.id: r for r in results_b}
    ids = sorted(by_a.keys() | by_b.keys(), key=lambda i: task_sort_key(by_a.get(i) or by_b[i]))
    pairs = [(_status(by_a.get(i), by_b.get(i)), by_a.get(i), by_b.get(i)) for i in ids]
    return sorted(pairs, key=lambda p: _STATUS_ORDER.index(p[0]))


def _table_text(rows: Sequence[_Row]) -> str:
    head = ("split", "metric", "A", "B", "B - A")
    cells = [head, *((r.split, r.metric, r.a, r.b, r.delta) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = []
    previous = ""
    for index, cell in enumerate(cells):
        if index > 1 and cell[0] != previous:
            lines.append("")
        previous = cell[0]
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cell, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def _run_line(name: str, run_dir: Path, summary: Summary) -> str:
    label = f" ({summary.run.label or summary.run.policy})" if summary.run else ""
    return f"{name}: {run_dir}{label}, {summary.overall.tasks} tasks, {summary.errors} errors"


def _tasks_text(pairs: Sequence[tuple[str, TaskResult | None, TaskResult | None]]) -> str:
    def ids(status: str, better: bool | None = None) -> list[str]:
        out = []
        for s, a, b in pairs:
            if s == status and (better is None or (b is not None and b.success) == better):
                out.append((a or b).id if (a or b) else "?")  # type: ignore[union-attr]
        return out

    def listed(values: list[str]) -> str:
        shown = ", ".join(values[:10]) + (f", ... ({len(values) - 10} more)" if len(values) > 10 else "")
        return f"{len(values)}" + (f" [{shown}]" if values else "")

    both = sum(1 for s, _, _ in pairs if s not in ("only-a", "only-b"))
    return (
        f"tasks in both runs: {both}; outcome differs: {len(ids('changed'))} "
        f"(B succeeds where A fails: {listed(ids('changed', True))}; B fails where A succeeds: "
        f"{listed(ids('changed', False))}); same outcome, checklist score differs: {len(ids('score'))}; "
        f"only in A: {listed(ids('only-a'))}; only in B: {listed(ids('only-b'))}"
    )


def _side_html(result: TaskResult | None, refs: Mapping[str, ImageRef], name: str) -> str:
    if result is None:
        return f'<div class="side"><b>{name}</b>: <small>not in this run</small></div>'
    counts = {c: sum(1 for r in result.reflections if r.category == c) for c in CATEGORIES}
    reflections = " ".join(f'<span class="{c}">{c} {n}</span>' for c, n in counts.items() if n)
    return (
        f'<div class="side"><b>{name}</b>: {outcome_html(result)}'
        f"{images_html('answer', result.answer, refs) or '<div class=label>no answer</div>'}"
        f"{failed_items_html(result)}<div><small>reflections: {reflections or 'none'}</small></div>"
        f"<div>{cost_html(result)}</div></div>"
    )


def _card(
    status: str,
    a: TaskResult | None,
    b: TaskResult | None,
    refs_a: Mapping[str, ImageRef],
    refs_b: Mapping[str, ImageRef],
) -> str:
    first = a or b
    assert first is not None
    inputs = images_html("inputs", first.inputs, refs_a if a is not None else refs_b)
    return (
        f'<div class="task {esc(status)}" id="task-{esc(first.id)}" {card_attrs(first, outcome=status)}>'
        f"<h3>{esc(first.id)} <small>{esc(first.split)} · {esc(_STATUS_LABELS[status])}</small></h3>"
        f'<div class="req">{esc(first.request)}</div>{inputs}'
        f'<div class="pair">{_side_html(a, refs_a, "A")}{_side_html(b, refs_b, "B")}</div></div>'
    )


def _summary_html(rows: Sequence[_Row]) -> str:
    css = {1: "ok", -1: "bad", 0: ""}
    body = "".join(
        f"<tr><td>{esc(r.split)}</td><td class=l>{esc(r.metric)}</td><td>{esc(r.a)}</td><td>{esc(r.b)}</td>"
        f'<td class="{css[r.sign]}">{esc(r.delta)}</td></tr>'
        for r in rows
    )
    return (
        "<table><thead><tr><th>split</th><th>metric</th><th>A</th><th>B</th><th>B - A</th></tr></thead>"
        f"<tbody>{body}</tbody></table><p class=meta>Green: B is better; red: B is worse (lower is better "
        "for cost and for under and over reflections).</p>"
    )


def _render(
    run_a: Path, run_b: Path, summaries: tuple[Summary, Summary], rows: Sequence[_Row],
    pairs: Sequence[tuple[str, TaskResult | None, TaskResult | None]], out: Path,
) -> str:  # fmt: skip
    def handles(results: Sequence[TaskResult | None]) -> list[str]:
        return [h for r in results if r is not None for h in (*r.inputs, *r.answer)]

    refs_a = image_refs(run_a, handles([a for _, a, _ in pairs]), page_dir=out, thumbs_dir=out / THUMBS_DIR)
    refs_b = image_refs(run_b, handles([b for _, _, b in pairs]), page_dir=out, thumbs_dir=out / THUMBS_DIR)
    cards = "".join(_card(s, a, b, refs_a, refs_b) for s, a, b in pairs)
    splits = ordered_splits((a or b).split for _, a, b in pairs if (a or b) is not None)  # type: ignore[union-attr]
    present = [s for s in _STATUS_ORDER if any(p[0] == s for p in pairs)]
    body = (
        "<h1>Run comparison</h1>"
        f'<p class="meta">{esc(_run_line("A", run_a, summaries[0]))}<br>{esc(_run_line("B", run_b, summaries[1]))}</p>'
        f"<h2>Per split</h2>{_summary_html(rows)}"
        f"<h2>Tasks ({len(pairs)}), differing outcomes first</h2>"
        f"<p class=meta>{esc(_tasks_text(pairs))}</p>"
        f"{filters_html(splits, outcomes=[(s, _STATUS_LABELS[s]) for s in present])}"
        f'<div class="grid">{cards}</div>'
    )
    return page("Run comparison", body)


def compare_runs(run_a: str | Path, run_b: str | Path, out: str | Path | None = None) -> str:
    """Compare two run folders.

    Args:
        run_a: The first (baseline) run folder.
        run_b: The second run folder; deltas are B - A.
        out: Where the page goes: a path ending in ``.html``, or a folder that gets ``compare.html``
            (created either way; thumbnails go beside the page in ``thumbs/``); ``None`` writes nothing.

    Returns:
        The comparison as a text table (per-split success, checklist, cost and reflection deltas,
        then the tasks whose outcome differs), ending with the page's path when one was written.

    Raises:
        ReportError: A run folder is missing or holds a record that does not parse.

    """
    dirs = (Path(run_a), Path(run_b))
    results = tuple(read_task_results(d) for d in dirs)
    summaries = tuple(
        summarize_results(r, errors=read_errors(d), run=read_run(d)) for d, r in zip(dirs, results, strict=True)
    )
    rows = _rows(summaries[0], summaries[1])
    pairs = _pairs(results[0], results[1])
    text = "\n".join(
        [_run_line("A", dirs[0], summaries[0]), _run_line("B", dirs[1], summaries[1]), "", _table_text(rows), "",
         _tasks_text(pairs)]
    )  # fmt: skip
    if out is not None:
        path = Path(out) if Path(out).suffix.lower() in (".html", ".htm") else Path(out) / COMPARE_FILE
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(dirs[0], dirs[1], (summaries[0], summaries[1]), rows, pairs, folder))
        text += f"\n\nwritten: {path}"
    return text
