"""Reflection analysis: every verdict on an image, classified against the injected faults.

The categories are the paper's Figure 1, measured:

- ``good``: accepted a clean image, or rejected (``redo``/``revise``) a faulty one naming a real fault;
- ``under``: accepted a faulty image, or rejected a faulty one without naming any real fault;
- ``over``: rejected a clean image (a redo or a revision it did not need);
- ``unknown``: the image has no ground truth (a real back end), so nothing can be said.

The ground truth is the synthetic environment's record of the faults it injected on purpose
(``Trajectory.truths[handle].faults``). A listed fault names a real one when it mentions the
real fault's subject (the object kind, e.g. ``dog``), or the text for a text fault.

Images a policy call made that no reflection judged (reflection switched off, or skipped by the
policy) are not reflections: they are counted apart as ``unreflected`` (and ``unreflected_faulty``),
never as ``good`` or ``under``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.evals.results import ReflectionCategory, ReflectionRecord, TaskResult
from visioncreator.graph import Trajectory
from visioncreator.tool_servers.synthetic import Fault, GroundTruth

__all__ = [
    "CATEGORIES",
    "ReflectionTally",
    "classify_reflections",
    "reflection_distribution",
    "unreflected_images",
]

CATEGORIES = ("good", "under", "over", "unknown")


class ReflectionTally(BaseModel):
    """How many verdicts fell in each category, plus the images nobody reflected on."""

    model_config = ConfigDict(extra="forbid")

    good: int = 0
    under: int = 0
    over: int = 0
    unknown: int = 0
    unreflected: int = Field(default=0, description="Images a policy call made that no reflection judged.")
    unreflected_faulty: int = Field(default=0, description="Of those, images with an injected fault.")

    @property
    def verdicts(self) -> int:
        """Every classified verdict (unreflected images excluded)."""
        return self.good + self.under + self.over + self.unknown

    def shares(self) -> dict[str, float]:
        """Each category's share of the verdicts (0 everywhere when there is none)."""
        n = self.verdicts
        return {c: (getattr(self, c) / n if n else 0.0) for c in CATEGORIES}


def _truth(truths: Mapping[str, Any], handle: str) -> GroundTruth | None:
    raw = truths.get(handle)
    if not raw:
        return None
    return raw if isinstance(raw, GroundTruth) else GroundTruth.model_validate(raw)


def _names(listed: str, fault: Fault) -> bool:
    text = listed.lower()
    if fault.subject:
        return fault.subject.lower() in text
    return fault.type == "misspelled_text" and "text" in text


def _classify(verdict: str, listed: Sequence[str], truth: GroundTruth | None) -> tuple[ReflectionCategory, str]:
    if truth is None:
        return "unknown", "no ground truth for this image"
    real = truth.faults
    if verdict == "accept":
        if real:
            return "under", f"accepted an image with {len(real)} injected fault(s)"
        return "good", "accepted a clean image"
    if not real:
        return "over", f"{verdict} of a clean image"
    if any(_names(item, fault) for item in listed for fault in real):
        return "good", f"{verdict} naming a real fault"
    return "under", f"{verdict} without naming any real fault"


def classify_reflections(trajectory: Trajectory) -> list[ReflectionRecord]:
    """Classify every reflection verdict on an image in a trajectory's turns.

    Args:
        trajectory: The task's record: its turns' parsed reflections and its ground truths.

    Returns:
        One record per ``<reflect>`` that names an image, in order. Reflections without an image
        (a judgement on a failed tool call) are not verdicts on an image and are left out.
    """
    records: list[ReflectionRecord] = []
    for turn in trajectory.turns:
        for reflection in turn.parsed.reflections:
            if reflection.image is None:
                continue
            truth = _truth(trajectory.truths, reflection.image)
            category, reason = _classify(reflection.verdict, reflection.faults, truth)
            records.append(
                ReflectionRecord(
                    turn=turn.index,
                    image=reflection.image,
                    verdict=reflection.verdict,
                    faults_listed=list(reflection.faults),
                    faults_true=None if truth is None else [f.detail for f in truth.faults],
                    category=category,
                    reason=reason,
                )
            )
    return records


def unreflected_images(trajectory: Trajectory, reflections: Sequence[ReflectionRecord]) -> tuple[int, int]:
    """Images the policy's calls made that no reflection judged, and how many of them are faulty."""
    judged = {r.image for r in reflections}
    made = dict.fromkeys(c.handle for c in trajectory.images_made(by="policy") if c.handle)
    missing = [h for h in made if h not in judged]
    faulty = sum(1 for h in missing if (t := _truth(trajectory.truths, h)) is not None and t.faults)
    return len(missing), faulty


def reflection_distribution(results: Iterable[TaskResult]) -> dict[str, ReflectionTally]:
    """Per split (and ``all``): the verdict categories and the unreflected images of a run's results."""
    tallies: dict[str, ReflectionTally] = {}
    for result in results:
        for key in (result.split, "all"):
            tally = tallies.setdefault(key, ReflectionTally())
            for record in result.reflections:
                setattr(tally, record.category, getattr(tally, record.category) + 1)
            tally.unreflected += result.unreflected
            tally.unreflected_faulty += result.unreflected_faulty
    if "all" in tallies:  # keep ``all`` last
        tallies["all"] = tallies.pop("all")
    return tallies
