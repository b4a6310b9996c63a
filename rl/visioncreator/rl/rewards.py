"""Rewards of a finished trajectory, and their weighted total.

Every reward is a pure function ``(trajectory, context) -> RewardResult`` with ``value`` in
[0, 1]; :func:`score` runs them all. Process rewards (format, tool, plan, reflection) live in
:mod:`visioncreator.rl.rewards_process`; outcome rewards (result, outcome) here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import TYPE_CHECKING

from visioncreator.rl.rewards_base import RewardContext, RewardResult, truth_of
from visioncreator.rl.rewards_process import format_reward, plan_reward, reflection_reward, tool_reward
from visioncreator.tool_servers.synthetic import checklist_for_spec, parse_prompt, verify

if TYPE_CHECKING:  # the graph package pulls in LangGraph; rewards only read the record
    from visioncreator.graph import Trajectory

__all__ = [
    "REWARDS",
    "RewardFn",
    "RewardWeights",
    "Rewards",
    "outcome_reward",
    "result_reward",
    "score",
]

RewardFn = Callable[["Trajectory", RewardContext], RewardResult]


def result_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """1 when the answer is well made, else 0.

    Well made: exactly ``n_images`` handles, no duplicates, each produced by a successful image
    tool call of this trajectory or, for img2img, one of the task's inputs.
    """
    answer = list(trajectory.answer)
    made = {c.handle for c in trajectory.images_made() if c.handle}
    if trajectory.task.split == "img2img":
        made |= set(trajectory.task.inputs)
    n = trajectory.task.n_images
    right_size = len(answer) == n
    unique = len(set(answer)) == len(answer)
    unknown = [h for h in answer if h not in made]
    ok = right_size and unique and not unknown
    return RewardResult(
        float(ok), {"n_answer": len(answer), "right_size": right_size, "unique": unique, "unknown": unknown}
    )


def outcome_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """Fraction of checklist items the answer's ground-truth scenes satisfy.

    Items come from ``context.checklist``, else (single tasks only) from the request parsed with
    ``parse_prompt``. The value is 0 when the answer has the wrong number of images, an image
    without ground truth, or there is no checklist. ``details["success"]`` is 1.0 when every
    item passes, else 0.0.
    """
    checklist = list(context.checklist)
    if not checklist and trajectory.task.split == "single":
        checklist = checklist_for_spec(parse_prompt(trajectory.task.request))
    truths = [truth_of(trajectory.truths, h) for h in trajectory.answer]
    scenes = [t.scene for t in truths if t is not None]
    n = trajectory.task.n_images
    if not checklist or len(trajectory.answer) != n or len(scenes) != n:
        reason = "no checklist" if not checklist else "wrong-sized answer or unknown images"
        return RewardResult(0.0, {"success": 0.0, "passed": 0, "items": len(checklist), "reason": reason})
    results = verify(checklist, scenes, context.input_scenes)
    passed = sum(r.passed for r in results)
    failed = [r.model_dump() for r in results if not r.passed]
    success = float(passed == len(results))
    return RewardResult(
        passed / len(results), {"success": success, "passed": passed, "items": len(results), "failed": failed}
    )


REWARDS: Mapping[str, RewardFn] = MappingProxyType(
    {
        "format": format_reward,
        "tool": tool_reward,
        "result": result_reward,
        "plan": plan_reward,
        "reflection": reflection_reward,
        "outcome": outcome_reward,
    }
)
"""Every reward by name, in the order :func:`score` reports them."""


@dataclass(frozen=True, kw_only=True)
class RewardWeights:
    """Weight of each reward in the total; the total is the weighted mean, so only ratios matter.

    Attributes:
        format: Well-formed turns. Small: a shaping term, not a goal.
        tool: Valid, successful tool calls.
        result: A right-sized answer of images this trajectory made.
        plan: A plan that covers the task.
        reflection: Verdicts that agree with the ground-truth faults.
        outcome: Checklist items satisfied: the task's real goal, so the largest weight.
    """

    format: float = 0.1
    tool: float = 0.1
    result: float = 0.1
    plan: float = 0.1
    reflection: float = 0.1
    outcome: float = 0.5

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        if any(v < 0 for v in values) or sum(values) <= 0:
            raise ValueError("reward weights must be non-negative with a positive sum")


@dataclass(frozen=True)
class Rewards:
    """Every reward of a trajectory and their weighted mean ``total`` in [0, 1]."""

    components: Mapping[str, RewardResult]
    total: float


def score(
    trajectory: Trajectory, context: RewardContext | None = None, weights: RewardWeights | None = None
) -> Rewards:
    """Run every reward of :data:`REWARDS` and combine them with ``weights``.

    Args:
        trajectory: The finished task.
        context: Checklist and input scenes; defaults to none of either.
        weights: Weight per reward; defaults to :class:`RewardWeights()`.

    Returns:
        Each component by name, and the weighted mean of their values.

    """
    context = context or RewardContext()
    weights = weights or RewardWeights()
    components = {name: fn(trajectory, context) for name, fn in REWARDS.items()}
    total_weight = sum(getattr(weights, name) for name in components)
    total = sum(getattr(weights, name) * r.value for name, r in components.items()) / total_weight
    return Rewards(components=MappingProxyType(components), total=min(1.0, max(0.0, total)))
