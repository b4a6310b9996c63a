"""Score a finished task against its checklist: the synthetic verifier, detectors, or a judge.

The synthetic verifier is exact and used whenever every answer image has ground truth; otherwise
the offline detectors check what they can. A vision judge, when given, adds its VIEScore-style
scores (and answers the checklist when no other scorer could).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.evals.results import JudgeScore
from visioncreator.evals.suites import SuiteTask
from visioncreator.graph import Trajectory, TurnRecord
from visioncreator.tool_servers.synthetic import CheckItem, CheckResult, GroundTruth, Scene, verify

__all__ = ["FaultCounts", "Judge", "Verdict", "count_faults", "score_answer", "verdicts", "verify_synthetic"]

ImageReader = Callable[[str], Awaitable[bytes]]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Largest output image file the detectors decode (the image store's own upload limit)."""
MAX_IMAGE_PIXELS = 40_000_000
"""Largest output image (width x height) the detectors decode."""


class Judge(Protocol):
    """What the scorer needs of a vision judge (:class:`visioncreator.evals.judge.VisionJudge`)."""

    async def score(
        self,
        request: str,
        image_bytes: bytes,
        checklist: Sequence[CheckItem] = (),
        *,
        inputs: Sequence[bytes] = (),
        image: str = "",
    ) -> JudgeScore:
        """Judge one output image against the request and its checklist items."""
        ...


class Verdict(BaseModel):
    """The checklist verdict on one task's answer."""

    model_config = ConfigDict(extra="forbid")

    success: bool
    """Right number of images, at least one checkable item, and every checkable item satisfied."""
    checklist_score: float
    """Fraction of the checkable items satisfied (0 when no item could be checked)."""
    items: list[CheckResult] = Field(default_factory=list)
    scorer: str = "synthetic"
    judge: list[JudgeScore] = Field(default_factory=list)


class FaultCounts(BaseModel):
    """Injected faults on the policy's images, and what reflection did about them."""

    model_config = ConfigDict(extra="forbid")

    injected: int = 0
    """Images the policy's calls produced with an injected fault."""
    caught: int = 0
    """Of those, images a reflection did not accept (redo or revise)."""
    faulty_answers: int = 0
    """Images of the answer that carry an injected fault."""


def _scene(truth: Mapping[str, Any] | None) -> Scene | None:
    if not truth:
        return None
    return GroundTruth.model_validate(truth).scene


def verdicts(turns: Sequence[TurnRecord]) -> dict[str, str]:
    """Handle -> the last verdict any reflection gave it (read from the turns' parsed segments)."""
    seen: dict[str, str] = {}
    for turn in turns:
        for reflection in turn.parsed.reflections:
            if reflection.image:
                seen[reflection.image] = reflection.verdict
    return seen


def verify_synthetic(
    checklist: Sequence[CheckItem],
    answer: Sequence[str],
    truths: Mapping[str, Mapping[str, Any]],
    input_scenes: Sequence[Scene],
) -> list[CheckResult] | None:
    """The exact verdict per checklist item, or ``None`` when an answer image has no ground truth."""
    scenes = [_scene(truths.get(h)) for h in answer]
    if not answer or any(s is None for s in scenes):
        return None
    return verify(checklist, [s for s in scenes if s is not None], input_scenes)


def count_faults(trajectory: Trajectory) -> FaultCounts:
    """Count the injected faults of the policy's images, those reflection caught, and faulty answers."""
    judged = verdicts(trajectory.turns)
    truths = trajectory.truths
    counts = FaultCounts()
    for call in trajectory.tool_calls:
        if call.by != "policy" or not call.ok or not call.handle:
            continue
        truth = truths.get(call.handle)
        if truth and truth.get("faults"):
            counts.injected += 1
            counts.caught += judged.get(call.handle) in ("redo", "revise")
    counts.faulty_answers = sum(1 for h in trajectory.answer if (truths.get(h) or {}).get("faults"))
    return counts


def _verdict(task: SuiteTask, answer: Sequence[str], items: Sequence[CheckResult], scorer: str) -> Verdict:
    """Score the checkable items only: an item nothing could check neither passes nor fails the task."""
    checked = [r for r in items if r.checkable]
    passed = sum(r.passed for r in checked)
    return Verdict(
        success=len(answer) == task.n_images and bool(checked) and passed == len(checked),
        checklist_score=passed / len(checked) if checked else 0.0,
        items=list(items),
        scorer=scorer,
    )


async def score_answer(
    task: SuiteTask,
    answer: Sequence[str],
    *,
    truths: Mapping[str, Mapping[str, Any]],
    input_scenes: Sequence[Scene],
    input_handles: Sequence[str] = (),
    read_image: ImageReader | None = None,
    judge: Judge | None = None,
) -> Verdict:
    """Score one task's answer with the best scorer that applies.

    Args:
        task: The suite task (its checklist and the number of images it wants).
        answer: The answer's image handles, in order.
        truths: Handle -> synthetic ground truth, where the tool server has it.
        input_scenes: Ground-truth scenes of the input images (for edit checks).
        input_handles: Handles of the input images (shown to the judge).
        read_image: Reads an image's PNG bytes; needed by the detectors and the judge.
        judge: A vision judge; when given, every answer image is judged too.

    Returns:
        The verdict: synthetic when every answer image has ground truth, else detectors (when
        ``read_image`` is given), else the judge's checklist answers.
    """
    items = verify_synthetic(task.checklist, answer, truths, input_scenes)
    if items is not None:
        verdict = _verdict(task, answer, items, "synthetic")
    elif read_image is not None and answer:
        verdict = await _detected(task, answer, read_image)
    else:
        verdict = _verdict(task, answer, [], "none")
    if judge is None or read_image is None:
        return verdict
    inputs = [await read_image(h) for h in input_handles]
    scores = [
        await judge.score(
            task.request, await read_image(h), [i for i in task.checklist if i.image == k], inputs=inputs, image=h
        )
        for k, h in enumerate(answer)
    ]
    verdict.judge = scores
    if not verdict.items and scores:
        verdict = _judged(task, answer, scores, verdict)
    return verdict


async def _detected(task: SuiteTask, answer: Sequence[str], read_image: ImageReader) -> Verdict:
    """The detectors' verdict; items they cannot check are kept but left out of the score."""
    from visioncreator.evals.scoring.detectors import score_with_detectors
    from visioncreator.tool_servers import decode_image

    images = [decode_image(await read_image(h), max_bytes=MAX_IMAGE_BYTES, max_pixels=MAX_IMAGE_PIXELS) for h in answer]
    items = await asyncio.to_thread(score_with_detectors, task.checklist, images)
    return _verdict(task, answer, items, "detectors")


def _judged(task: SuiteTask, answer: Sequence[str], scores: Sequence[JudgeScore], base: Verdict) -> Verdict:
    """A verdict from the judge's yes/no answers to the checklist (every image's answers pooled)."""
    answers: dict[str, bool] = {}
    for score in scores:
        for question, yes in score.checklist.items():
            answers[question] = answers.get(question, True) and yes
    if not answers:
        return base
    passed = sum(answers.values())
    return Verdict(
        success=len(answer) == task.n_images and passed == len(answers),
        checklist_score=passed / len(answers),
        items=[],
        scorer="judge",
        judge=list(scores),
    )
