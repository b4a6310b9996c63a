"""Every reward by name, their weights, and the weighted total of a finished trajectory.

Every reward is a pure function ``(trajectory, context) -> RewardResult`` with ``value`` in
[0, 1]; :func:`score` runs them all. Process rewards (format, tool, plan, reflection) live in
:mod:`visioncreator.rl.rewards.process`, outcome rewards (result, outcome) in
:mod:`visioncreator.rl.rewards.outcome`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import TYPE_CHECKING

from visioncreator.rl.rewards.base import RewardContext, RewardFn, RewardResult
from visioncreator.rl.rewards.outcome import outcome_reward, result_reward
from visioncreator.rl.rewards.process import format_reward, plan_reward, reflection_reward, tool_reward

if TYPE_CHECKING:  # the graph package pulls in LangGraph; rewards only read the record
    from visioncreator.graph import Trajectory

__all__ = ["REWARDS", "RewardWeights", "Rewards", "score"]

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
