"""The statistics of benchmarks/gpu_learning.py (Wilson, exact McNemar, paired bootstrap), checked against scipy."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_learning_report.py"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_learning_report", PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 0), (10, 2), (7, 7), (1, 15), (40, 25)])
def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_pairs(report: ModuleType, b: int, c: int) -> None:
    from scipy import stats  # the detectors extra brings scipy (brisque); CI installs it

    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert report.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (31, 96)])
def test_wilson_interval_matches_scipy_and_holds_the_rate(report: ModuleType, k: int, n: int) -> None:
    from scipy import stats  # the detectors extra brings scipy (brisque); CI installs it

    low, high = report.wilson(k, n)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=2e-4)  # z = 1.96 against the exact quantile
    assert low <= k / n <= high


def test_compare_counts_pairs_on_the_shared_keys_only(report: ModuleType) -> None:
    first = {("t1", 0): 1.0, ("t2", 0): 1.0, ("t3", 0): 0.0, ("t4", 1): 1.0, ("only-first", 0): 1.0}
    second = {("t1", 0): 0.0, ("t2", 0): 1.0, ("t3", 0): 1.0, ("t4", 1): 0.0}
    result = report.compare(first, second)
    assert result["pairs"] == 4
    assert (result["only_first"], result["only_second"]) == (2, 1)
    assert result["difference"] == pytest.approx(0.25)
    assert result["mcnemar_p"] == pytest.approx(1.0)
    low, high = result["bootstrap_95"]
    assert low <= 0.25 <= high


def test_a_clear_paired_gain_is_significant_both_ways(report: ModuleType) -> None:
    first = {(f"t{i}", s): 1.0 for i in range(48) for s in (0, 1)}
    second = {k: (1.0 if k[0] in {f"t{i}" for i in range(20)} else 0.0) for k in first}
    result = report.compare(first, second)
    assert result["only_first"] == 56
    assert result["mcnemar_p"] == pytest.approx(2 * 0.5**56)
    assert result["bootstrap_p"] < 1e-3
    assert math.isclose(result["difference"], 56 / 96)
