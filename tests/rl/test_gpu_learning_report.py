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


# The statistics themselves are checked against scipy in tests/rl/test_significance.py.


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
