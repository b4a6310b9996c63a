"""evaluate() keeps every evaluation trajectory, and an interrupted evaluation resumes from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from visioncreator.rl import read_records
from visioncreator.rl.train import EvalPoint, PolicyModel, TaskSource, evaluate, model_dir_for

pytest.importorskip("transformers")

POLICY = PolicyModel(model="tiny", torch_threads=1, max_new_tokens=8)
TASKS = TaskSource(splits=("single",), limit=2, fault_rate=0.5)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir_for(POLICY, tmp_path_factory.mktemp("models"))


def _evaluate(model: Path, tmp_path: Path, **kwargs: Any) -> EvalPoint:
    return evaluate(model, TASKS, policy=POLICY, store=tmp_path / "store", max_turns=2, **kwargs)


def test_the_trajectories_are_kept_scored_and_not_run_twice(tiny_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    seen: list[dict[str, Any]] = []
    point = _evaluate(tiny_dir, tmp_path, records=path, tool_seed=1, progress=seen.append)
    records = read_records(path)
    # Appended as each finishes: with trajectories run concurrently, in either order.
    assert sorted(r.task_id for r in records) == ["single-000", "single-001"]
    assert {r.tool_seed for r in records} == {1}
    assert all("outcome" in r.rewards and r.turns for r in records)  # scored, with what the model wrote
    assert (point.n, point.records, point.tool_seed) == (2, str(path), 1)
    assert point.per_task == {r.task_id: r.reward_details["outcome"]["success"] for r in records}
    # Run again into the same file: nothing runs, the point is read from the kept trajectories.
    again: list[dict[str, Any]] = []
    same = _evaluate(tiny_dir, tmp_path, records=path, tool_seed=1, progress=again.append)
    assert (len(seen), again) == (2, [])
    assert len(read_records(path)) == 2
    assert (same.success_rate, same.mean_rewards) == (point.success_rate, point.mean_rewards)


def test_an_interrupted_evaluation_runs_only_what_is_missing(tiny_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    _evaluate(tiny_dir, tmp_path, records=path)
    first, _second = path.read_text().splitlines(keepends=True)
    path.write_text(first)  # as if killed after the first trajectory
    [kept] = read_records(path)
    missing = ({"single-000", "single-001"} - {kept.task_id}).pop()
    ran: list[dict[str, Any]] = []
    point = _evaluate(tiny_dir, tmp_path, records=path, progress=ran.append)
    assert [e["task"] for e in ran] == [missing]
    assert point.n == 2
    assert [r.task_id for r in read_records(path)] == [kept.task_id, missing]
    # Without a file nothing is kept and everything runs.
    assert _evaluate(tiny_dir, tmp_path).records is None
