"""The graph's progress events, and the answer it settles when a run ends."""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer

from visioncreator.graph.state import AgentState, typed, typed_list
from visioncreator.graph.trajectory import ToolCallRecord
from visioncreator.policy import Task
from visioncreator.tool_servers import IMAGE_TOOLS

__all__ = ["emit", "settle"]


def emit(event: str, **data: Any) -> None:
    """Send a progress event on LangGraph's ``custom`` stream (a no-op outside a run)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer({"event": event, **data})


def settle(state: AgentState) -> dict[str, Any]:
    """Settle the answer: the policy's, checked against the images this task made.

    Runs in the policy node whose turn ended the run (an answer, a budget or too many format
    errors), so the last checkpoint holds the settled answer.
    """
    answer = state.get("answer")
    termination = state.get("termination")
    calls = typed_list(ToolCallRecord, state.get("tool_calls", ()))
    task = typed(Task, state["task"])
    known = {c.handle for c in calls if c.handle and c.name in IMAGE_TOOLS} | set(task.inputs)
    valid = [h for h in (answer or []) if h in known]
    if answer is not None and valid and len(valid) == len(answer):
        reason = termination or "answered"
    else:
        # The caller still gets images, but the answer is the graph's: marked, so that no
        # reward or score counts it as the policy's.
        valid = valid or _latest_images(calls, task.n_images)
        reason = termination or ("invalid_answer" if answer is not None else "no_answer")
    repaired = valid != list(answer or [])
    emit("finish", answer=valid, termination=reason, repaired=repaired)
    return {
        "policy_answer": None if answer is None else list(answer),
        "answer_repaired": repaired,
        "answer": valid,
        "termination": reason,
    }


def _latest_images(calls: list[ToolCallRecord], n_images: int) -> list[str]:
    """Fallback answer: the latest image of each plan step (or of each call without a step)."""
    by_step: dict[str, str] = {}
    for r in calls:
        if r.ok and r.handle and r.name in IMAGE_TOOLS:
            by_step[str(r.step) if r.step is not None else r.id] = r.handle
    return list(by_step.values())[:n_images]
