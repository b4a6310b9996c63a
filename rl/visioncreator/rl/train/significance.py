"""Is a difference in held-out success real? Intervals for a rate and paired tests of two models.

Evaluations here are small (tens of tasks), and two models are evaluated on the same tasks with
the same tool seeds, so their outcomes come in pairs. This module gives:

- :func:`wilson_interval`: the Wilson score interval of a success rate (good at small n and at
  rates near 0 or 1, where the normal approximation is not);
- :func:`bootstrap_interval`: a percentile bootstrap interval of a mean, optionally resampling
  whole clusters (a task's outcomes at several tool seeds are not independent);
- :func:`mcnemar_exact`: the exact McNemar test on paired binary outcomes (a two-sided binomial
  test on the discordant pairs);
- :func:`paired_bootstrap`: the difference of two paired success rates with a bootstrap interval
  and a two-sided p-value, resampling pairs or clusters of pairs.

Pure Python (no numpy or scipy): the numbers are small, and a result must not depend on which
numerical library is installed. The tests check them against scipy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "McNemarResult",
    "PairedDifference",
    "bootstrap_interval",
    "mcnemar_exact",
    "paired_bootstrap",
    "wilson_interval",
]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion.

    Args:
        successes: Number of successes.
        n: Number of trials (0 gives the uninformative ``(0.0, 1.0)``).
        confidence: Two-sided coverage, in (0, 1).

    Returns:
        ``(low, high)`` within [0, 1].

    Raises:
        ValueError: ``successes`` is not within ``[0, n]`` or ``confidence`` not within (0, 1).

    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be within [0, n={n}]")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be within (0, 1)")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave 1e-17 off it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, linearly interpolated (numpy's default rule)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _groups(n: int, clusters: Sequence[Hashable] | None) -> list[list[int]]:
    """Indices grouped by cluster (each index its own cluster when ``clusters`` is None)."""
    if clusters is None:
        return [[i] for i in range(n)]
    if len(clusters) != n:
        raise ValueError(f"clusters has {len(clusters)} labels for {n} values")
    grouped: dict[Hashable, list[int]] = {}
    for i, label in enumerate(clusters):
        grouped.setdefault(label, []).append(i)
    return list(grouped.values())


def _resampled_means(
    values: Sequence[float], clusters: Sequence[Hashable] | None, resamples: int, seed: int
) -> list[float]:
    """Means of ``resamples`` bootstrap resamples, drawing whole clusters with replacement."""
    if not values:
        raise ValueError("no values to resample")
    if resamples < 1:
        raise ValueError(f"resamples={resamples} must be at least 1")
    groups = _groups(len(values), clusters)
    sums = [sum(values[i] for i in g) for g in groups]
    sizes = [len(g) for g in groups]
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        picks = rng.choices(range(len(groups)), k=len(groups))
        means.append(sum(sums[k] for k in picks) / sum(sizes[k] for k in picks))
    return means


def bootstrap_interval(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of ``values``.

    Args:
        values: The observations (0/1 outcomes for a success rate).
        confidence: Two-sided coverage, in (0, 1).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling (the interval is reproducible).
        clusters: One label per value; whole clusters are resampled (e.g. the task id, when each
            task ran at several tool seeds). None: every value is its own cluster.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: No values, a bad ``resamples`` or ``confidence``, or mismatched ``clusters``.

    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be within (0, 1)")
    means = sorted(_resampled_means(values, clusters, resamples, seed))
    tail = (1 - confidence) / 2
    return _percentile(means, tail), _percentile(means, 1 - tail)


@dataclass(frozen=True, kw_only=True)
class McNemarResult:
    """The exact McNemar test of two paired binary outcomes.

    Attributes:
        only_a: Pairs where only A succeeded.
        only_b: Pairs where only B succeeded.
        both: Pairs where both succeeded.
        neither: Pairs where neither did.
        p_value: Two-sided exact p-value (1.0 with no discordant pair).
    """

    only_a: int
    only_b: int
    both: int
    neither: int
    p_value: float


def _binomial_two_sided(k: int, n: int) -> float:
    """Two-sided p-value of ``k`` successes in ``n`` fair coin flips: twice the smaller tail, at most 1."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / (1 << n)  # exact integers, one division
    return min(1.0, 2 * tail)


def mcnemar_exact(a: Sequence[bool | float], b: Sequence[bool | float]) -> McNemarResult:
    """The exact McNemar test: do A and B succeed on different pairs more often than chance says?

    Under the null hypothesis each discordant pair (one succeeded, the other not) is equally
    likely to favour either; the p-value is the two-sided binomial test of ``only_a`` out of the
    discordant pairs with probability 1/2 (what ``scipy.stats.binomtest`` gives, and the
    ``exact=True`` McNemar test of statsmodels).

    Args:
        a: Outcomes of A, one per pair (truthy: success).
        b: Outcomes of B on the same pairs, in the same order.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.

    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} and {len(b)}")
    pairs = [(bool(x), bool(y)) for x, y in zip(a, b, strict=True)]
    only_a = sum(x and not y for x, y in pairs)
    only_b = sum(y and not x for x, y in pairs)
    both = sum(x and y for x, y in pairs)
    return McNemarResult(
        only_a=only_a,
        only_b=only_b,
        both=both,
        neither=len(pairs) - only_a - only_b - both,
        p_value=_binomial_two_sided(only_a, only_a + only_b),
    )


@dataclass(frozen=True, kw_only=True)
class PairedDifference:
    """The difference of two paired means (A minus B) with its bootstrap interval.

    Attributes:
        difference: mean(A) - mean(B).
        low: Lower end of the percentile bootstrap interval.
        high: Upper end.
        p_value: Two-sided bootstrap p-value of "no difference": twice the share of resampled
            differences on the far side of 0 (counting ties half), at most 1.
        resamples: Bootstrap resamples drawn.
    """

    difference: float
    low: float
    high: float
    p_value: float
    resamples: int


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> PairedDifference:
    """The paired bootstrap of mean(A) - mean(B): pairs (or clusters of pairs) resampled together.

    Args:
        a: A's outcome per pair (0/1 for success).
        b: B's outcome on the same pairs, in the same order.
        confidence: Two-sided coverage of the interval, in (0, 1).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        clusters: One label per pair (e.g. the task id of a task x tool-seed pair); whole clusters
            are resampled. None: every pair is its own cluster.

    Raises:
        ValueError: ``a`` and ``b`` differ in length or are empty; a bad ``confidence`` or ``resamples``.

    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} and {len(b)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be within (0, 1)")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    means = sorted(_resampled_means(diffs, clusters, resamples, seed))
    observed = sum(diffs) / len(diffs)
    tail = (1 - confidence) / 2
    if observed >= 0:
        beyond = sum(m < 0 for m in means) + 0.5 * sum(m == 0 for m in means)
    else:
        beyond = sum(m > 0 for m in means) + 0.5 * sum(m == 0 for m in means)
    return PairedDifference(
        difference=observed,
        low=_percentile(means, tail),
        high=_percentile(means, 1 - tail),
        p_value=min(1.0, 2 * beyond / len(means)),
        resamples=resamples,
    )
