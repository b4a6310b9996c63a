"""A self-contained HTML page of one trajectory: plan, tool calls with images, reflections, answer."""

from __future__ import annotations

import html
import json
from typing import Any

from visioncreator.graph.trajectory import ToolCallRecord, Trajectory, TurnRecord
from visioncreator.policy import Reflection
from visioncreator.tool_servers import ToolName

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.4em} .turn{border-left:4px solid #888;padding:.3em 1em;margin:1em 0}
.plan{border-color:#3a7} .act{border-color:#37a} .reflect{border-color:#a73} .finish{border-color:#555}
.seg{margin:.4em 0} .tag{font-weight:bold;font-family:monospace} pre{white-space:pre-wrap;background:#f6f6f6;
padding:.4em;margin:.2em 0} .call{display:flex;gap:1em;align-items:flex-start;margin:.5em 0;padding:.5em;
background:#fafafa} .call img{width:192px;height:auto;border:1px solid #ccc} .err{color:#b00}
.accept{color:#070} .redo{color:#b60} .revise{color:#a0a} .answer img{width:256px;margin:.3em}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _image(handle: str | None, images_dir: str) -> str:
    if not handle:
        return ""
    return f'<img src="{_e(images_dir)}/{_e(handle)}.png" alt="{_e(handle)}" title="{_e(handle)}">'


def _faults(truth: dict[str, Any] | None) -> str:
    if not truth:
        return ""
    faults = truth.get("faults") or []
    if not faults:
        return '<div class="accept">ground truth: no injected fault</div>'
    items = "".join(f"<li>{_e(f.get('type'))}: {_e(f.get('detail'))}</li>" for f in faults)
    return f'<div class="err">ground truth: injected faults<ul>{items}</ul></div>'


def _call_html(call: ToolCallRecord, traj: Trajectory, images_dir: str) -> str:
    args = json.dumps(call.arguments, sort_keys=True)
    status = (
        f'<span class="accept">ok</span> → <code>{_e(call.handle)}</code>'
        if call.ok
        else f'<span class="err">error: {_e(call.error)}</span>'
    )
    handle = call.handle if call.name != ToolName.INSPECT_IMAGE else None
    truth = traj.truths.get(handle) if handle else None
    return (
        f'<div class="call">{_image(handle, images_dir)}<div><div><b>{_e(call.name)}</b> '
        f"<small>({call.by}, {call.latency_s * 1000:.0f} ms)</small></div>"
        f"<pre>{_e(args)}</pre><div>{status}</div>{_faults(truth)}</div></div>"
    )


def _segments_html(turn: TurnRecord) -> str:
    parts = []
    for seg in turn.segments:
        css = seg.value.verdict if isinstance(seg.value, Reflection) else ""
        parts.append(
            f'<div class="seg"><span class="tag {css}">&lt;{seg.kind}&gt;</span><pre>{_e(seg.body)}</pre></div>'
        )
    for err in turn.errors:
        parts.append(f'<div class="seg err">format error ({_e(err.code)}): {_e(err.message)}</div>')
    return "".join(parts)


def render_report(traj: Trajectory, *, images_dir: str = "images") -> str:
    """The report page. Image paths are relative: ``{images_dir}/{handle}.png``."""
    task = traj.task
    calls_by_turn: dict[int, list[ToolCallRecord]] = {}
    for call in traj.tool_calls:
        calls_by_turn.setdefault(call.turn, []).append(call)
    body = [
        f"<h1>visioncreator: {_e(task.request)}</h1>",
        "<table>"
        f"<tr><th>split</th><td>{_e(task.split)}</td><th>images wanted</th><td>{_e(task.n_images)}</td>"
        f"<th>seed</th><td>{traj.seed}</td></tr><tr><th>termination</th><td>{_e(traj.termination)}</td>"
        f"<th>turns</th><td>{len(traj.turns)}</td><th>tool calls</th><td>{len(traj.tool_calls)}</td></tr>"
        f"<tr><th>wall</th><td>{traj.timings.wall_s:.2f} s</td><th>policy</th><td>{traj.timings.policy_s:.2f} s</td>"
        f"<th>tools</th><td>{traj.timings.tools_s:.2f} s</td></tr></table>",
    ]
    if task.inputs:
        body.append("<h2>Input images</h2>" + "".join(_image(h, images_dir) for h in task.inputs))
    body.append("<h2>Turns</h2>")
    for turn in traj.turns:
        node = _e(turn.node)
        calls = "".join(_call_html(c, traj, images_dir) for c in calls_by_turn.get(turn.index, []))
        body.append(
            f'<div class="turn {node}"><h3>#{turn.index} {node} <small>({turn.latency_s * 1000:.0f} ms)</small></h3>'
            f"{_segments_html(turn)}{calls}</div>"
        )
    graph_calls = calls_by_turn.get(-1, [])
    if graph_calls:
        looks = "".join(_call_html(c, traj, images_dir) for c in graph_calls)
        body.append(f"<details><summary>The graph's own looks ({len(graph_calls)})</summary>{looks}</details>")
    answer = "".join(
        f"<figure>{_image(h, images_dir)}<figcaption>{i}. {_e(h)}</figcaption>{_faults(traj.truths.get(h))}</figure>"
        for i, h in enumerate(traj.answer, 1)
    )
    body.append(f'<h2>Answer</h2><div class="answer">{answer or "<p>(no images)</p>"}</div>')
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>visioncreator report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )
