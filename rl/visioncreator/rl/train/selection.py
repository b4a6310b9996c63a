"""Which trajectories an SFT stage learns from: the union of its selections.

A :class:`~visioncreator.rl.train.config.Selection` keeps trajectories of some splits whose
rewards reach given minimums (and, on request, whose outcome is a full success), up to a limit;
the rewards are scored afresh with the default weights, in each trajectory's own context when it
is a record.
"""

from __future__ import annotations

from collections.abc import Sequence

from visioncreator.graph import Trajectory
from visioncreator.rl.rewards.base import RewardContext
from visioncreator.rl.rewards.scoring import RewardWeights, score
from visioncreator.rl.train.config import Selection

__all__ = ["select_trajectories"]


def _context(trajectory: Trajectory) -> RewardContext:
    reward_context = getattr(trajectory, "reward_context", None)
    return reward_context() if callable(reward_context) else RewardContext()


def _keeps(selection: Selection, trajectory: Trajectory) -> bool:
    if selection.splits and trajectory.task.split not in selection.splits:
        return False
    if not selection.min_rewards and not selection.require_success:
        return True
    result = score(trajectory, _context(trajectory), RewardWeights())
    if any(result.components[name].value < low for name, low in selection.min_rewards.items()):
        return False
    return not selection.require_success or result.components["outcome"].details.get("success") == 1.0


def select_trajectories(trajectories: Sequence[Trajectory], selections: Sequence[Selection]) -> list[Trajectory]:
    """The union of ``selections`` over ``trajectories``, in their order, each kept once.

    Raises:
        ValueError: A selection names an unknown reward.

    """
    known = {"format", "tool", "result", "plan", "reflection", "outcome"}
    for selection in selections:
        unknown = set(selection.min_rewards) - known
        if unknown:
            raise ValueError(f"selection min_rewards names unknown rewards {sorted(unknown)}; known: {sorted(known)}")
    chosen: set[int] = set()
    for selection in selections:
        taken = 0
        for i, trajectory in enumerate(trajectories):
            if selection.limit is not None and taken >= selection.limit:
                break
            if _keeps(selection, trajectory):
                taken += 1
                chosen.add(i)
    return [t for i, t in enumerate(trajectories) if i in chosen]
