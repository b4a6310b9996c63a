"""HTML of the eval report and the run comparison: plain pages, every string escaped, no framework.

Images are ``<img>`` tags with relative paths (thumbnails linking to the full image, loaded lazily);
plots are embedded as PNG data URIs. A small script filters the task grid by split, outcome and
text, and reports on the page how many images loaded: a page whose folder lost its images says so.
Opening ``report.html#all-images`` loads every image at once instead of as they scroll into view.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
from collections.abc import Iterable, Mapping, Sequence

from visioncreator.evals.report.assets import CSS, SCRIPT
from visioncreator.evals.report.images import ImageRef
from visioncreator.evals.report.plots import CATEGORY_COLORS, Plot
from visioncreator.evals.report.summary import CATEGORIES, SplitSummary, Summary
from visioncreator.evals.results import ReflectionRecord, TaskError, TaskResult
from visioncreator.policy import Plan
from visioncreator.tool_servers.synthetic import CheckItem, CheckResult

__all__ = ["describe_item", "image_html", "page", "render_report", "task_sort_key"]


def esc(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def num(value: float | None, digits: int = 2) -> str:
    """A number for a table cell; an en dash for ``None``."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def page(title: str, body: str) -> str:
    """A complete HTML document with the shared style and script."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body>{body}<script>{SCRIPT}</script></body></html>\n"
    )


def image_html(handle: str, refs: Mapping[str, ImageRef], *, css: str = "") -> str:
    """A lazily loaded thumbnail linking to the full image, or a placeholder for an image not on disk."""
    ref = refs.get(handle)
    if ref is None or ref.thumb is None or ref.full is None:
        return f'<span class="missing" title="{esc(handle)}">{esc(handle)}<br>not in store</span>'
    cls = f' class="{esc(css)}"' if css else ""
    return (
        f'<a href="{esc(ref.full)}"><img{cls} src="{esc(ref.thumb)}" loading="lazy" alt="{esc(handle)}" '
        f'title="{esc(handle)}"></a>'
    )


def describe_item(item: CheckItem) -> str:
    """A checklist item in a few words, e.g. ``count horse = 3 (image 0)``."""
    parts: list[str] = [item.check]
    if item.subject is not None:
        parts.append(item.subject)
    if item.relation is not None:
        parts.append(item.relation.replace("_", " "))
    if item.other is not None:
        parts.append(item.other)
    if item.value is not None:
        parts.append(f"= {item.value}")
    if item.reference is not None:
        parts.append(f"(reference {item.reference})")
    return " ".join(parts) + f" (image {item.image})"


def task_sort_key(result: TaskResult) -> tuple[int, str, str]:
    """Grid order: by split (known splits first), then id."""
    order = ("single", "multi", "img2img")
    return (order.index(result.split) if result.split in order else len(order), result.split, result.id)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _rows(summary: Summary) -> list[SplitSummary]:
    return [*summary.splits.values(), summary.overall]


def _score_table(summary: Summary) -> str:
    judged = summary.overall.judge is not None
    head = ["split", "tasks", "successes", "success rate", "checklist", "faults injected", "caught", "faulty answers"]
    if judged:
        head += ["judge SC", "judge PQ", "judge overall"]
    head.append("terminations")
    rows = []
    for s in _rows(summary):
        row = [
            esc(s.split), str(s.tasks), str(s.successes), num(s.success_rate, 3), num(s.checklist_mean, 3),
            str(s.faults.injected), f"{s.faults.caught} ({num(s.faults.catch_rate)})", str(s.faults.faulty_answers),
        ]  # fmt: skip
        if judged:
            j = s.judge
            row += [num(j.semantic_consistency if j else None), num(j.perceptual_quality if j else None)]
            row.append(num(j.overall if j else None))
        row.append('<span class="l">' + esc(", ".join(f"{k}: {v}" for k, v in s.terminations.items())) + "</span>")
        rows.append(row)
    return _table(head, rows)


def _cost_table(summary: Summary) -> str:
    head = [
        "split", "policy calls/task", "tokens/task", "tool calls/task", "generator s/task", "wall s/task",
        "policy calls", "tokens", "tool calls", "generator s", "wall s",
    ]  # fmt: skip
    rows = []
    for s in _rows(summary):
        m, t = s.cost.mean, s.cost.total
        rows.append([
            esc(s.split), num(m.policy_calls, 1), num(m.tokens, 0), num(m.tool_calls, 1), num(m.generator_s),
            num(m.wall_s), num(t.policy_calls, 0), num(t.tokens, 0), num(t.tool_calls, 0), num(t.generator_s, 1),
            num(t.wall_s, 1),
        ])  # fmt: skip
    return _table(head, rows)


def _reflection_table(summary: Summary) -> str:
    head = ["split", "reflections", *CATEGORIES, "unreflected images (faulty)"]
    rows = []
    for s in _rows(summary):
        r = s.reflections
        cells = [f'<span class="{c}">{r.counts[c]} ({num(r.fractions[c])})</span>' for c in CATEGORIES]
        rows.append([esc(s.split), str(r.total), *cells, f"{r.unreflected} ({r.unreflected_faulty})"])
    return _table(head, rows)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # an import hook refused it, or a broken half-installed package
        return False


def _plots_html(plots: Sequence[Plot]) -> str:
    figures = []
    for plot in plots:
        data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img class="plot" src="data:image/png;base64,{data}" alt="{esc(plot.title)}">'
            f'<figcaption><small>{esc(plot.title)} (<a href="plots/{esc(plot.path.name)}">PNG</a>)</small>'
            "</figcaption></figure>"
        )
    if figures:
        return f'<div class="plots">{"".join(figures)}</div>'
    if not _importable("matplotlib"):
        return "<p>No plots: matplotlib is not installed (<code>pip install 'visioncreator[evals]'</code>).</p>"
    return "<p>No results to plot.</p>"


def _plan_html(plan: Plan | None) -> str:
    if plan is None:
        return "<small>no plan</small>"
    items = []
    for step in plan.steps:
        after = f" <small>after {esc(', '.join(str(d) for d in step.depends_on))}</small>" if step.depends_on else ""
        prompt = f"<br><small>{esc(step.prompt)}</small>" if step.prompt else ""
        items.append(f"<li><code>{esc(step.tool)}</code> {esc(step.goal)}{after}{prompt}</li>")
    return f"<ol>{''.join(items)}</ol>"


def _reflections_html(reflections: Sequence[ReflectionRecord], refs: Mapping[str, ImageRef]) -> str:
    if not reflections:
        return "<small>no reflection</small>"
    rows = []
    for r in reflections:
        image = image_html(r.image, refs, css="refl") if r.image else ""
        truth = "–" if r.faults_true is None else (", ".join(r.faults_true) or "none")
        verdict = f'<span class="{esc(r.verdict)}">{esc(r.verdict)}</span>'
        rows.append([
            str(r.turn), f'<span class="refl">{image}</span>', verdict,
            f'<span class="l">{esc(", ".join(r.faults_listed) or "none")}</span>', esc(truth),
            f'<span class="{esc(r.category)}">{esc(r.category)}</span>', f'<span class="l">{esc(r.reason)}</span>',
        ])  # fmt: skip
    return _table(["turn", "image", "verdict", "faults seen", "faults true", "category", "why"], rows)


def failed_items_html(result: TaskResult) -> str:
    """The checklist items a task failed, as a list (empty string when none failed)."""
    failed = [i for i in result.items if not i.passed and i.checkable]
    unchecked = [i for i in result.items if not i.checkable]

    def items(results: list[CheckResult]) -> str:
        return "".join(
            f"<li>{esc(describe_item(i.item))}{': ' + esc(i.detail) if i.detail else ''}</li>" for i in results
        )

    html = ""
    if failed:
        html += f'<div class="label">failed checklist items</div><ul class="bad-items">{items(failed)}</ul>'
    if unchecked:
        html += f'<div class="label">not checkable here</div><ul class="unchecked-items">{items(unchecked)}</ul>'
    return html


def _judge_html(result: TaskResult) -> str:
    if not result.judge:
        return ""
    rows = [
        [esc(j.image), num(j.semantic_consistency, 1), num(j.perceptual_quality, 1), num(j.overall, 1),
         esc(j.error or ("cached" if j.cached else ""))]
        for j in result.judge
    ]  # fmt: skip
    return '<div class="label">judge</div>' + _table(["image", "SC", "PQ", "overall", ""], rows)


def outcome_html(result: TaskResult) -> str:
    """Success mark, checklist score and termination of one task."""
    mark = '<span class="ok">success</span>' if result.success else '<span class="bad">failure</span>'
    return f"{mark} · checklist {num(result.checklist_score)} · <small>{esc(result.termination or 'unknown')}</small>"


def cost_html(result: TaskResult) -> str:
    """One line of a task's cost."""
    c = result.cost
    return (
        f"<small>policy calls {c.policy_calls} · tokens {c.prompt_tokens + c.completion_tokens} · tool calls "
        f"{c.tool_calls} · generator {c.generator_s:.2f} s · wall {c.wall_s:.2f} s</small>"
    )


def images_html(label: str, handles: Sequence[str], refs: Mapping[str, ImageRef]) -> str:
    """A labelled row of thumbnails (nothing when there are no handles)."""
    if not handles:
        return ""
    return (
        f'<div class="label">{esc(label)}</div><div class="imgs">{"".join(image_html(h, refs) for h in handles)}</div>'
    )


def card_attrs(result: TaskResult, *, outcome: str) -> str:
    """The data attributes the filter script reads."""
    search = f"{result.id} {result.request}".lower()
    return f'data-split="{esc(result.split)}" data-outcome="{esc(outcome)}" data-search="{esc(search)}"'


def _task_card(result: TaskResult, refs: Mapping[str, ImageRef]) -> str:
    outcome = "success" if result.success else "failure"
    trajectory = f' · <a href="{esc(result.trajectory)}">trajectory</a>' if result.trajectory else ""
    return (
        f'<div class="task {outcome}" id="task-{esc(result.id)}" {card_attrs(result, outcome=outcome)}>'
        f"<h3>{esc(result.id)} <small>{esc(result.split)} · scorer {esc(result.scorer)}{trajectory}</small></h3>"
        f'<div class="req">{esc(result.request)}</div><div>{outcome_html(result)}</div>'
        f"{images_html('inputs', result.inputs, refs)}"
        f"{images_html('answer', result.answer, refs) or '<div class=label>no answer</div>'}"
        f"{failed_items_html(result)}{_judge_html(result)}"
        f"<details><summary>plan ({len(result.plan.steps) if result.plan else 0} steps) and "
        f"reflections ({len(result.reflections)})</summary>"
        f'<div class="label">plan</div>{_plan_html(result.plan)}'
        f'<div class="label">reflections</div>{_reflections_html(result.reflections, refs)}</details>'
        f"<div>{cost_html(result)}</div></div>"
    )


def filters_html(splits: Iterable[str], *, outcomes: Sequence[tuple[str, str]]) -> str:
    """The filter bar over the task grid: split, outcome (value, label pairs) and free text."""
    split_options = "".join(f'<option value="{esc(s)}">{esc(s)}</option>' for s in splits)
    outcome_options = "".join(f'<option value="{esc(v)}">{esc(label)}</option>' for v, label in outcomes)
    return (
        '<div class="filters">split <select id="f-split"><option value="all">all</option>'
        f'{split_options}</select> outcome <select id="f-outcome"><option value="all">all</option>{outcome_options}'
        '</select> <input id="f-text" type="search" placeholder="id or request text"> '
        '<small id="f-count"></small> · <small id="image-status" class="meta">images loading…</small></div>'
    )


def _errors_html(errors: Sequence[TaskError]) -> str:
    if not errors:
        return ""
    rows = [
        [
            esc(e.stage),
            esc(e.id or "–"),
            esc(e.line if e.line is not None else "–"),
            f'<pre class="l">{esc(e.message)}</pre>',
        ]
        for e in errors
    ]
    return f"<h2>Errors ({len(errors)})</h2>" + _table(["stage", "task", "suite line", "message"], rows)


def _run_html(summary: Summary) -> str:
    run = summary.run
    if run is None:
        return '<p class="meta">No run.json in this folder.</p>'
    settings = esc(json.dumps(run.settings, indent=1, sort_keys=True))
    versions = esc(", ".join(f"{k} {v}" for k, v in sorted(run.versions.items())))
    return (
        f'<p class="meta">suite <code>{esc(run.suite)}</code> · policy <code>{esc(run.policy)}</code> · tools '
        f"<code>{esc(run.tools)}</code> · started {esc(run.started_at or '?')} · report {esc(summary.created_at)}"
        f"<br>{versions}</p><details><summary>settings</summary><pre>{settings}</pre></details>"
    )


def render_report(
    summary: Summary,
    results: Sequence[TaskResult],
    errors: Sequence[TaskError],
    *,
    refs: Mapping[str, ImageRef],
    plots: Sequence[Plot],
) -> str:
    """The report page of one run (``report.html``), with paths relative to the run folder."""
    title = f"Eval report: {summary.run.label or summary.run.suite}" if summary.run else "Eval report"
    legend = " ".join(f'<span style="color:{CATEGORY_COLORS[c]}">■ {c}</span>' for c in CATEGORIES)
    cards = "".join(_task_card(r, refs) for r in sorted(results, key=task_sort_key))
    body = (
        f"<h1>{esc(title)}</h1>{_run_html(summary)}"
        f"<h2>Scores</h2>{_score_table(summary)}"
        f"<h2>Cost</h2>{_cost_table(summary)}"
        f"<h2>Reflections</h2><p class=meta>{legend}: good; under = missed a real fault or accepted a bad image; "
        f"over = rejected a good image or redid needlessly; unknown = no ground truth.</p>{_reflection_table(summary)}"
        f"<h2>Plots</h2>{_plots_html(plots)}{_errors_html(errors)}"
        f"<h2>Tasks ({len(results)})</h2>"
        f"{filters_html(summary.splits, outcomes=[('success', 'success'), ('failure', 'failure')])}"
        f'<div class="grid">{cards}</div>'
    )
    return page(title, body)
