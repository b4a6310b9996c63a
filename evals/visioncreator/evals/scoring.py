"""Score a finished task against its checklist with the synthetic ground truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from visioncreator.evals.suite import SuiteTask
from visioncreator.policy.format import parse_turn
from visioncreator.tool_servers.checklist_models import CheckResult
from visioncreator.tool_servers.scene import GroundTruth, Scene
from visioncreator.tool_servers.synthetic.checklist import verify


class TaskScore(BaseModel):
    """The verdict on one task."""

    model_config = ConfigDict(extra="forbid")

    id: str
    split: str
    success: bool
    """Right number of images and every checklist item satisfied."""
    checklist_score: float
    """Fraction of checklist items satisfied."""
    results: list[CheckResult]
    n_answer: int
    termination: str
    policy_tool_calls: int
    faults_injected: int
    """Images the policy's calls produced with an injected fault."""
    faults_caught: int
    """Of those, images a reflection did not accept (redo or revise)."""
    faulty_answers: int
    """Images of the answer that carry an injected fault."""


def _scene(truth: Mapping[str, Any] | None) -> Scene | None:
    if not truth:
        return None
    return GroundTruth.model_validate(truth).scene


def verdicts(turns: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Handle -> the last verdict any reflection gave it."""
    seen: dict[str, str] = {}
    for turn in turns:
        for reflection in parse_turn(str(turn.get("text", ""))).reflections:
            if reflection.image:
                seen[reflection.image] = reflection.verdict
    return seen


def score_task(
    task: SuiteTask,
    *,
    answer: Sequence[str],
    truths: Mapping[str, Mapping[str, Any]],
    input_scenes: Sequence[Scene],
    turns: Sequence[Mapping[str, Any]],
    tool_calls: Sequence[Mapping[str, Any]],
    termination: str,
) -> TaskScore:
    """Verify a task's answer against its checklist, and count faults injected and caught."""
    outputs = [_scene(truths.get(h)) for h in answer]
    known = [s for s in outputs if s is not None]
    results = verify(task.checklist, known, input_scenes) if len(known) == len(outputs) else []
    passed = sum(r.passed for r in results)
    score = passed / len(task.checklist) if task.checklist and results else 0.0
    judged = verdicts(turns)
    injected = caught = 0
    for call in tool_calls:
        if call.get("by") != "policy" or not call.get("ok") or not call.get("handle"):
            continue
        truth = truths.get(str(call["handle"]))
        if truth and truth.get("faults"):
            injected += 1
            caught += judged.get(str(call["handle"])) in ("redo", "revise")
    faulty = sum(1 for h in answer if (truths.get(h) or {}).get("faults"))
    return TaskScore(
        id=task.id,
        split=task.split,
        success=len(answer) == task.n_images and bool(results) and passed == len(results),
        checklist_score=score,
        results=results,
        n_answer=len(answer),
        termination=termination,
        policy_tool_calls=sum(1 for c in tool_calls if c.get("by") == "policy"),
        faults_injected=injected,
        faults_caught=caught,
        faulty_answers=faulty,
    )
