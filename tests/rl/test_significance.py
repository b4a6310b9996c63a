"""Intervals and paired tests of visioncreator.rl.train.significance, checked against scipy."""

from __future__ import annotations

import random

import pytest
from scipy import stats

from visioncreator.rl.train import (
    bootstrap_interval,
    mcnemar_exact,
    paired_bootstrap,
    wilson_interval,
)


@pytest.mark.parametrize(("k", "n"), [(0, 12), (5, 12), (12, 12), (48, 96), (3, 96), (1, 1)])
def test_the_wilson_interval_is_scipys(k: int, n: int) -> None:
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_a_wilson_interval_is_inside_zero_one_and_refuses_nonsense() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 5)
    assert low == 0.0
    assert 0.0 < high < 1.0
    assert wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(10, 20, confidence=0.99)[0] < wilson_interval(10, 20)[0]
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(6, 5)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 5, confidence=1.0)


@pytest.mark.parametrize(
    ("only_a", "only_b", "both", "neither"), [(10, 2, 30, 54), (0, 0, 5, 5), (7, 7, 1, 1), (0, 9, 0, 0)]
)
def test_exact_mcnemar_is_the_binomial_test_on_discordant_pairs(
    only_a: int, only_b: int, both: int, neither: int
) -> None:
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    order = list(range(len(a)))
    random.Random(3).shuffle(order)  # the pairing matters, not the order
    result = mcnemar_exact([a[i] for i in order], [b[i] for i in order])
    assert (result.only_a, result.only_b, result.both, result.neither) == (only_a, only_b, both, neither)
    discordant = only_a + only_b
    expected = stats.binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    assert result.p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_ignores_agreement_but_the_unpaired_view_would_not() -> None:
    # 40 pairs both succeed, 40 neither, A alone wins 8 and B alone 0: p = 2 / 2**8.
    a = [1] * 48 + [0] * 40
    b = [1] * 40 + [0] * 48
    assert mcnemar_exact(a, b).p_value == pytest.approx(2 / 2**8)
    with pytest.raises(ValueError, match="length"):
        mcnemar_exact([1, 0], [1])


def test_the_bootstrap_interval_covers_the_mean_and_matches_scipys_percentile_bootstrap() -> None:
    rng = random.Random(0)
    values = [float(rng.random() < 0.4) for _ in range(96)]
    low, high = bootstrap_interval(values, resamples=20_000, seed=1)
    mean = sum(values) / len(values)
    assert low < mean < high
    theirs = stats.bootstrap((values,), lambda x: sum(x) / len(x), vectorized=False, n_resamples=5_000,
                             method="percentile", random_state=0).confidence_interval  # fmt: skip
    assert (low, high) == pytest.approx((theirs.low, theirs.high), abs=0.02)
    assert bootstrap_interval(values, resamples=500, seed=7) == bootstrap_interval(values, resamples=500, seed=7)


def test_resampling_clusters_widens_the_interval_of_correlated_outcomes() -> None:
    # Each task run at two tool seeds with identical outcomes: 48 tasks, not 96 independent draws.
    rng = random.Random(2)
    per_task = [float(rng.random() < 0.5) for _ in range(48)]
    values = [v for v in per_task for _ in range(2)]
    tasks = [i for i in range(48) for _ in range(2)]
    naive = bootstrap_interval(values, resamples=4_000)
    clustered = bootstrap_interval(values, resamples=4_000, clusters=tasks)
    assert clustered[1] - clustered[0] > 1.2 * (naive[1] - naive[0])
    with pytest.raises(ValueError, match="labels"):
        bootstrap_interval(values, clusters=tasks[:-1])


def test_the_paired_bootstrap_finds_a_clear_gain_and_no_gain_where_there_is_none() -> None:
    control = [1.0] * 30 + [0.0] * 66
    better = [1.0] * 30 + [1.0] * 20 + [0.0] * 46  # wins 20 pairs, loses none
    gain = paired_bootstrap(better, control, resamples=4_000)
    assert gain.difference == pytest.approx(20 / 96)
    assert 0.0 < gain.low < gain.difference < gain.high
    assert gain.p_value < 0.01
    same = paired_bootstrap(control, control, resamples=1_000)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    rng = random.Random(5)
    noise_a = [float(rng.random() < 0.5) for _ in range(96)]
    noise_b = [float(rng.random() < 0.5) for _ in range(96)]
    noise = paired_bootstrap(noise_a, noise_b, resamples=4_000)
    assert noise.low < 0.0 < noise.high
    assert noise.p_value > 0.05
    # The bootstrap p-value agrees in size with the exact McNemar test on the same pairs.
    assert gain.p_value == pytest.approx(mcnemar_exact(better, control).p_value, abs=0.01)
