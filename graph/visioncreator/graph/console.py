"""Reviews at the terminal: what ``visioncreator run --review`` shows and how it reads the answer.

Each review prints the new images (handle, ``image://`` URI, the call that made it, what the
graph's inspection saw) and the policy's proposed verdicts, then reads one line from the input:
``approve``, ``redo <note>`` or ``revise <plan JSON>``. A line that is not an answer is explained
and asked again; the end of the input stops the run, which stays paused at its review (running the
same command again resumes there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from visioncreator.graph.client import ToolClient
from visioncreator.graph.errors import GraphError
from visioncreator.graph.review import ReviewDecision, Reviewer, ReviewError
from visioncreator.graph.run_folder import OutputFiles, checked_handles

__all__ = ["ReviewInputEnded", "console_reviewer"]

_PROMPT = "review> approve | redo <note> | revise <plan JSON>: "


class ReviewInputEnded(GraphError):
    """The reviewer's input ended before an answer; the run stays paused at its review."""


def console_reviewer(
    read: TextIO, write: TextIO, *, tools: ToolClient | None = None, out: Path | None = None
) -> Reviewer:
    """A reviewer that shows each review on ``write`` and reads the answer, a line, from ``read``.

    Args:
        read: Where the answers come from (a terminal, or piped lines).
        write: Where the reviews are shown.
        tools: With ``out``: the client to read each new image from, to save it for a look.
        out: The run's folder: each new image is saved as ``images/<handle>.png`` in it.

    Raises (from the reviewer):
        ReviewInputEnded: ``read`` ended before an answer.
        PathEscapeError: The tool server named an image with something that is not a handle.

    """
    echo = not _is_terminal(read)

    async def review(payload: dict[str, Any]) -> ReviewDecision:
        files: dict[str, Path] = {}
        if tools is not None and out is not None:
            for image in payload.get("images") or ():
                files[image["handle"]] = await _save(tools, OutputFiles(out), image["handle"])
        _show(payload, write, files)
        while True:
            print(_PROMPT, end="", file=write, flush=True)
            line = await asyncio.to_thread(read.readline)
            if echo and line:  # piped answers: show them, as a terminal would
                print(line.rstrip("\n"), file=write, flush=True)
            if not line:
                print(file=write, flush=True)
                raise ReviewInputEnded(
                    "the review got no answer (end of input): the run is paused at its review; "
                    "run the same command again to resume there"
                )
            if not line.strip():
                continue
            try:
                return ReviewDecision.parse(line)
            except ReviewError as exc:
                print(f"  not an answer: {exc}", file=write, flush=True)

    return review


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


async def _save(tools: ToolClient, files: OutputFiles, handle: str) -> Path:
    path = files.image(checked_handles([handle])[0])
    if not path.exists():
        data = await tools.read_image(handle)
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, data)
    return path


def _show(payload: Mapping[str, Any], write: TextIO, files: Mapping[str, Path]) -> None:
    lines = [f"review of turn {payload.get('turn')} (reflect) for {payload.get('request')!r}:"]
    if payload.get("error"):
        lines.append(f"  not taken: {payload['error']}")
    images = payload.get("images") or []
    for k, image in enumerate(images, 1):
        arguments = image.get("arguments") or {}
        what = arguments.get("prompt") or arguments.get("instruction") or ""
        lines.append(f"  image {k}: {image['handle']} (step {image.get('step')}, {image.get('tool')}: {what!r})")
        lines.append(f"    {files.get(image['handle']) or image.get('uri')}")
        seen = _seen(image.get("inspection"))
        if seen:
            lines.append(f"    sees: {seen}")
        proposed = image.get("proposed")
        if proposed:
            faults = f": {'; '.join(proposed['faults'])}" if proposed.get("faults") else ""
            lines.append(f"    the policy proposes: {proposed['verdict']}{faults}")
        else:
            lines.append("    the policy proposes: nothing (no verdict on this image)")
    if not images:
        lines.append("  no new image (the calls failed)")
    turn = payload.get("proposed") or {}
    if turn.get("plan"):
        lines.append(f"  the policy also proposes a new plan of {len(turn['plan'].get('steps', ()))} step(s)")
    if turn.get("tool_calls"):
        lines.append(f"  the policy also proposes {len(turn['tool_calls'])} tool call(s)")
    print("\n".join(lines), file=write, flush=True)


def _seen(inspection: Any) -> str:
    """What an inspection saw, in a few words."""
    if not isinstance(inspection, Mapping):
        return ""
    parts = [
        " ".join(str(o.get(k)) for k in ("color", "kind") if o.get(k))
        for o in inspection.get("objects") or ()
        if isinstance(o, Mapping)
    ]
    if inspection.get("text"):
        parts.append(f"text {inspection['text']!r}")
    return ", ".join(p for p in parts if p)
