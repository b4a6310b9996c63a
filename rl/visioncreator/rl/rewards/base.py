"""What every reward takes and gives: the context of a trajectory and a result in [0, 1].

A reward is a pure function :data:`RewardFn`, ``(trajectory, context) -> RewardResult``; the
helpers here read what the record keeps (parsed turns, the last plan, ground truths).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visioncreator.policy import ParsedTurn, Plan
from visioncreator.tool_servers.synthetic import CheckItem, GroundTruth, Scene

if TYPE_CHECKING:  # the graph package pulls in LangGraph; rewards only read the record
    from visioncreator.graph import Trajectory, TurnRecord

__all__ = ["RewardContext", "RewardFn", "RewardResult", "last_plan", "parsed_turns", "truth_of"]


@dataclass(frozen=True, kw_only=True)
class RewardContext:
    """What a reward needs besides the trajectory.

    Attributes:
        checklist: The task's checklist; empty when unknown (``outcome`` then derives one for
            ``single`` tasks from the request, and ``plan`` from each step's goal).
        input_scenes: Ground-truth scenes of the task's input images, by index (img2img).
        self_corrected_credit: Credit in [0, 1] of a failed tool call that a later call for the
            same plan step fixed.
    """

    checklist: tuple[CheckItem, ...] = ()
    input_scenes: tuple[Scene, ...] = ()
    self_corrected_credit: float = field(default=0.5)


@dataclass(frozen=True)
class RewardResult:
    """One reward: ``value`` in [0, 1] and the counts behind it."""

    value: float
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"reward value {self.value} is outside [0, 1]")


RewardFn = Callable[["Trajectory", RewardContext], RewardResult]
"""A reward: ``(trajectory, context) -> RewardResult`` with ``value`` in [0, 1]."""


def parsed_turns(trajectory: Trajectory) -> list[tuple[TurnRecord, ParsedTurn]]:
    """Each policy turn with its parse, as the record keeps it (the text is never parsed again)."""
    return [(t, t.parsed) for t in trajectory.turns]


def last_plan(trajectory: Trajectory) -> Plan | None:
    """The last plan the policy wrote (a revision replaces the plan), else the graph's record of it."""
    plans = [s.value for _, parsed in parsed_turns(trajectory) for s in parsed.segments if isinstance(s.value, Plan)]
    return plans[-1] if plans else trajectory.plan


def truth_of(truths: Mapping[str, Any], handle: str) -> GroundTruth | None:
    """The ground truth of ``handle``, or ``None`` when the trajectory has none."""
    raw = truths.get(handle)
    if not raw:
        return None
    return raw if isinstance(raw, GroundTruth) else GroundTruth.model_validate(raw)
