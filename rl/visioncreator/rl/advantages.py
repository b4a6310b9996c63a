"""GRPO advantages: group normalisation, per-token and per-node credit, degenerate-group reports.

A group is the samples of one task under one policy. GRPO's advantage of a sample is its reward
minus the group mean, divided by the group's standard deviation (TRL's ``scale_rewards="group"``,
with the unbiased standard deviation TRL uses). A group whose rewards are all equal teaches
nothing: its advantages are zeros and it is flagged.

Per-node credit (the paper's finding: plan tokens learn from plan rewards, reflection tokens from
the reflection reward) gives the tokens of the turns at a node the group-normalised advantage of
the rewards named for that node, and every other policy token the advantage of the weighted total.
Environment tokens (mask 0) always get 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.rl.errors import RLError
from visioncreator.rl.samples import TokenSample

__all__ = [
    "AdvantageError",
    "GroupAdvantages",
    "GroupReport",
    "as_weights",
    "group_advantages",
    "group_report",
    "per_token_advantages",
    "weighted_total",
]

_EQUAL_TOL = 1e-12


class AdvantageError(RLError, ValueError):
    """Rewards, weights or samples that cannot give advantages (empty, missing, mismatched)."""


class GroupAdvantages(BaseModel):
    """The advantages of one group of samples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: tuple[float, ...] = Field(description="One advantage per sample, in order.")
    mean: float = Field(description="Mean reward of the group.")
    std: float = Field(description="Unbiased standard deviation of the rewards (0 for a group of one).")
    all_equal: bool = Field(description="Every reward is the same: the group teaches nothing; values are zeros.")


class GroupReport(BaseModel):
    """Which groups of a batch are degenerate (all rewards equal)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_groups: int = Field(description="Groups looked at.")
    degenerate: tuple[str, ...] = Field(description="Ids of the groups whose rewards are all equal, in order.")

    @property
    def n_degenerate(self) -> int:
        """How many groups are degenerate."""
        return len(self.degenerate)

    @property
    def fraction_degenerate(self) -> float:
        """Degenerate groups over all groups (0 for no groups)."""
        return self.n_degenerate / self.n_groups if self.n_groups else 0.0


def group_advantages(rewards: Sequence[float], *, eps: float = 1e-6, scale_by_std: bool = True) -> GroupAdvantages:
    """GRPO advantages of one group: ``(r - mean) / (std + eps)``, or ``r - mean`` without scaling.

    Args:
        rewards: One reward per sample of the group.
        eps: Added to the standard deviation.
        scale_by_std: Divide by the standard deviation (Dr. GRPO turns this off).

    Returns:
        The advantages with the group's statistics; an all-equal group is flagged and gets zeros.

    Raises:
        AdvantageError: No rewards, a reward that is not finite, or a negative ``eps``.

    """
    if not rewards:
        raise AdvantageError("a group needs at least one reward")
    if eps < 0:
        raise AdvantageError(f"eps must be non-negative, got {eps}")
    values = [float(r) for r in rewards]
    bad = [i for i, r in enumerate(values) if not math.isfinite(r)]
    if bad:
        raise AdvantageError(f"reward {bad[0]} of the group is not finite: {values[bad[0]]}")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in values) / (n - 1)) if n > 1 else 0.0
    all_equal = max(values) - min(values) <= _EQUAL_TOL
    if all_equal:
        return GroupAdvantages(values=(0.0,) * n, mean=mean, std=std, all_equal=True)
    scale = std + eps if scale_by_std else 1.0
    return GroupAdvantages(values=tuple((r - mean) / scale for r in values), mean=mean, std=std, all_equal=False)


def group_report(groups: Mapping[str, Sequence[float]]) -> GroupReport:
    """Flag the groups whose rewards are all equal.

    Args:
        groups: Group id -> the rewards of its samples.

    Returns:
        How many groups there were and which are degenerate.

    """
    degenerate = tuple(gid for gid, rewards in groups.items() if group_advantages(rewards).all_equal)
    return GroupReport(n_groups=len(groups), degenerate=degenerate)


def as_weights(weights: Mapping[str, float] | object) -> dict[str, float]:
    """Reward weights by name, from a mapping or a weights dataclass (``RewardWeights``).

    Raises:
        AdvantageError: Anything else.

    """
    if isinstance(weights, Mapping):
        return {str(k): float(v) for k, v in weights.items()}
    if is_dataclass(weights) and not isinstance(weights, type):
        return {k: float(v) for k, v in asdict(weights).items()}
    raise AdvantageError(f"weights must be a mapping or a weights dataclass, got {type(weights).__name__}")


def weighted_total(components: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The weighted mean of the named rewards (as :func:`visioncreator.rl.rewards.scoring.score` combines them).

    Args:
        components: Reward name -> value.
        weights: Reward name -> weight; names with weight 0 may be missing from ``components``.

    Raises:
        AdvantageError: A weighted reward is missing, a weight is negative, or the weights sum to 0.

    """
    if any(w < 0 for w in weights.values()):
        raise AdvantageError(f"weights must be non-negative: {dict(weights)}")
    total_weight = sum(weights.values())
    if total_weight <= 0:
        raise AdvantageError(f"the weights of {sorted(weights)} sum to 0")
    missing = sorted(k for k, w in weights.items() if w > 0 and k not in components)
    if missing:
        raise AdvantageError(f"reward(s) {missing} missing; have {sorted(components)}")
    return sum(w * float(components[k]) for k, w in weights.items() if w > 0) / total_weight


def per_token_advantages(
    samples: Sequence[TokenSample],
    components: Sequence[Mapping[str, float]],
    weights: Mapping[str, float] | object,
    node_rewards: Mapping[str, Sequence[str]] | None = None,
    *,
    eps: float = 1e-6,
    scale_by_std: bool = True,
) -> list[list[float]]:
    """One advantage per completion token for each sample of one group.

    Args:
        samples: The group's samples.
        components: For each sample, its rewards by name (e.g. ``{"plan": 0.5, "format": 1.0, ...}``).
        weights: Reward name -> weight of the total (a mapping or a
            :class:`~visioncreator.rl.rewards.scoring.RewardWeights`).
        node_rewards: Node -> the rewards that credit its tokens, e.g.
            ``{"plan": ["plan", "format"], "reflect": ["reflection", "format"]}``: the tokens of turns
            at that node get the group-normalised advantage of the weighted mean of those rewards
            (weights from ``weights``; a name without a weight there counts 1). Other policy tokens
            get the total's advantage.
        eps: See :func:`group_advantages`.
        scale_by_std: See :func:`group_advantages`.

    Returns:
        For each sample, one float per completion token; 0.0 on environment tokens.

    Raises:
        AdvantageError: Samples and components differ in number, or a reward or weight is missing.

    """
    if len(samples) != len(components):
        raise AdvantageError(f"{len(samples)} samples but {len(components)} reward sets")
    w = as_weights(weights)
    totals = group_advantages([weighted_total(c, w) for c in components], eps=eps, scale_by_std=scale_by_std)
    by_node: dict[str, GroupAdvantages] = {}
    for node, names in (node_rewards or {}).items():
        if not names:
            raise AdvantageError(f"node {node!r} names no rewards")
        node_weights = {name: w.get(name, 1.0) for name in names}
        try:
            rewards = [weighted_total(c, node_weights) for c in components]
        except AdvantageError as exc:
            raise AdvantageError(f"node {node!r}: {exc}") from exc
        by_node[node] = group_advantages(rewards, eps=eps, scale_by_std=scale_by_std)
    out: list[list[float]] = []
    for i, sample in enumerate(samples):
        row = []
        for mask, node in zip(sample.env_mask, sample.nodes, strict=True):
            if not mask:
                row.append(0.0)
            elif node in by_node:
                row.append(by_node[node].values[i])
            else:
                row.append(totals.values[i])
        out.append(row)
    return out
