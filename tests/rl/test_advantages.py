"""GRPO advantages on hand-made groups with known answers."""

from __future__ import annotations

import math

import pytest

from visioncreator.rl import RewardWeights
from visioncreator.rl.advantages import (
    AdvantageError,
    group_advantages,
    group_report,
    per_token_advantages,
    weighted_total,
)
from visioncreator.rl.samples import TokenSample

HALF_SQRT2 = 1 / math.sqrt(2)


def sample(*runs: tuple[str, int]) -> TokenSample:
    """Completion tokens as runs of (node, count); node "" is an environment run."""
    nodes: list[str] = []
    mask: list[int] = []
    turns: list[int] = []
    turn = -1
    for node, count in runs:
        if node:
            turn += 1
        nodes += [node] * count
        mask += [1 if node else 0] * count
        turns += [turn if node else -1] * count
    n = len(nodes)
    return TokenSample(
        prompt_ids=(1,),
        completion_ids=tuple(range(n)),
        env_mask=tuple(mask),
        logprobs=None,
        nodes=tuple(nodes),
        turns=tuple(turns),
    )


def test_group_advantages_normalise_by_mean_and_unbiased_std() -> None:
    group = group_advantages([1.0, 2.0, 3.0])
    assert group.mean == 2.0
    assert group.std == 1.0
    assert not group.all_equal
    assert group.values == pytest.approx((-1.0, 0.0, 1.0), rel=1e-5)
    pair = group_advantages([1.0, 0.0])
    assert pair.std == pytest.approx(HALF_SQRT2)
    assert pair.values == pytest.approx((HALF_SQRT2, -HALF_SQRT2), rel=1e-5)


def test_without_scaling_advantages_are_centred_rewards() -> None:
    assert group_advantages([1.0, 2.0, 6.0], scale_by_std=False).values == (-2.0, -1.0, 3.0)


def test_eps_keeps_a_tiny_spread_finite() -> None:
    group = group_advantages([0.0, 1e-9], eps=1e-6)
    assert not group.all_equal
    assert all(abs(v) < 1e-3 for v in group.values)


@pytest.mark.parametrize("rewards", [[0.3, 0.3, 0.3, 0.3], [0.5], [0.0, 0.0]])
def test_all_equal_groups_are_flagged_and_give_zeros(rewards: list[float]) -> None:
    group = group_advantages(rewards)
    assert group.all_equal
    assert group.values == (0.0,) * len(rewards)
    assert group.mean == pytest.approx(rewards[0])


@pytest.mark.parametrize(
    ("rewards", "eps", "match"),
    [([], 1e-6, "at least one reward"), ([0.0, math.nan], 1e-6, "reward 1 .* not finite"), ([1.0], -1.0, "eps")],
)
def test_bad_groups_are_refused(rewards: list[float], eps: float, match: str) -> None:
    with pytest.raises(AdvantageError, match=match):
        group_advantages(rewards, eps=eps)


def test_group_report_lists_the_degenerate_groups() -> None:
    report = group_report({"a": [1.0, 1.0], "b": [0.0, 1.0], "c": [0.5], "d": [0.2, 0.9, 0.2]})
    assert report.n_groups == 4
    assert report.degenerate == ("a", "c")
    assert report.n_degenerate == 2
    assert report.fraction_degenerate == 0.5
    assert group_report({}).fraction_degenerate == 0.0


def test_weighted_total_is_the_weighted_mean() -> None:
    assert weighted_total({"plan": 1.0, "outcome": 0.5}, {"plan": 1.0, "outcome": 3.0}) == pytest.approx(0.625)
    assert weighted_total({"plan": 1.0}, {"plan": 1.0, "outcome": 0.0}) == 1.0
    with pytest.raises(AdvantageError, match=r"\['outcome'\] missing"):
        weighted_total({"plan": 1.0}, {"plan": 1.0, "outcome": 1.0})
    with pytest.raises(AdvantageError, match="sum to 0"):
        weighted_total({"plan": 1.0}, {"plan": 0.0})


COMPONENTS = [
    {"plan": 1.0, "reflection": 0.0, "format": 1.0, "outcome": 0.0},  # good plan, bad reflection, total 0.5
    {"plan": 0.0, "reflection": 1.0, "format": 1.0, "outcome": 1.0},  # bad plan, good reflection, total 0.75
]
WEIGHTS = {"plan": 1.0, "reflection": 1.0, "format": 1.0, "outcome": 1.0}
GROUP = [
    sample(("plan", 2), ("", 3), ("act", 1), ("", 2), ("reflect", 2)),
    sample(("plan", 1), ("", 1), ("reflect", 3)),
]


def test_without_node_rewards_every_policy_token_gets_the_total_advantage() -> None:
    rows = per_token_advantages(GROUP, COMPONENTS, WEIGHTS)
    low, high = -HALF_SQRT2, HALF_SQRT2
    assert rows[0] == pytest.approx([low, low, 0, 0, 0, low, 0, 0, low, low], rel=1e-5)
    assert rows[1] == pytest.approx([high, 0, high, high, high], rel=1e-5)


def test_node_rewards_credit_plan_and_reflect_tokens_by_their_own_rewards() -> None:
    rows = per_token_advantages(
        GROUP, COMPONENTS, WEIGHTS, node_rewards={"plan": ["plan", "format"], "reflect": ["reflection", "format"]}
    )
    low, high = -HALF_SQRT2, HALF_SQRT2
    # Sample 0: its plan was better (plan tokens up), its reflection and total worse.
    assert rows[0] == pytest.approx([high, high, 0, 0, 0, low, 0, 0, low, low], rel=1e-5)
    # Sample 1: plan tokens down although its total is higher; reflect tokens up.
    assert rows[1] == pytest.approx([low, 0, high, high, high], rel=1e-5)


def test_a_node_whose_rewards_are_equal_in_the_group_gets_no_credit() -> None:
    same_plan = [{**c, "plan": 0.5} for c in COMPONENTS]
    rows = per_token_advantages(GROUP, same_plan, WEIGHTS, node_rewards={"plan": ["plan"]})
    assert rows[0][:2] == [0.0, 0.0]
    assert rows[1][0] == 0.0
    assert rows[1][2] != 0.0  # reflect tokens still get the total's advantage


def test_node_weights_come_from_the_weights() -> None:
    components = [{"plan": 1.0, "format": 0.0}, {"plan": 0.0, "format": 1.0}]
    # plan weighs 3, format 1: sample 0's plan-node reward is 0.75, sample 1's 0.25.
    rows = per_token_advantages(
        [sample(("plan", 1)), sample(("plan", 1))],
        components,
        {"plan": 3.0, "format": 1.0},
        node_rewards={"plan": ["plan", "format"]},
    )
    assert rows[0][0] > 0 > rows[1][0]


def test_reward_weights_dataclass_is_accepted() -> None:
    components = [
        {"format": 1.0, "tool": 1.0, "result": 1.0, "plan": 1.0, "reflection": 1.0, "outcome": v} for v in (1.0, 0.0)
    ]
    rows = per_token_advantages([sample(("act", 1)), sample(("act", 1))], components, RewardWeights())
    assert rows[0][0] == pytest.approx(HALF_SQRT2, rel=1e-5)
    assert rows[1][0] == pytest.approx(-HALF_SQRT2, rel=1e-5)


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(AdvantageError, match="2 samples but 1 reward sets"):
        per_token_advantages(GROUP, COMPONENTS[:1], WEIGHTS)
    with pytest.raises(AdvantageError, match=r"node 'reflect'.*\['reflection'\] missing"):
        per_token_advantages(
            GROUP, [{"plan": 1.0}, {"plan": 0.0}], {"plan": 1.0}, node_rewards={"reflect": ["reflection"]}
        )
    with pytest.raises(AdvantageError, match="node 'plan' names no rewards"):
        per_token_advantages(GROUP, COMPONENTS, WEIGHTS, node_rewards={"plan": []})
    with pytest.raises(AdvantageError, match="weights must be a mapping"):
        per_token_advantages(GROUP, COMPONENTS, 1.0)
