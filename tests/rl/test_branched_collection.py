"""`visioncreator collect --branch-at reflect`: groups forked from one base run's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from visioncreator.graph.offline import expert_policy
from visioncreator.policy import ExpertConfig
from visioncreator.rl import CollectConfig, CollectError, collect, read_records
from visioncreator.rl.collection.cli import main as collect_main
from visioncreator.rl.collection.collector import synthetic_tools
from visioncreator.rl.collection.ray import RayWorkers

MULTI: dict[str, Any] = {
    "id": "multi-x",
    "split": "multi",
    "request": "a red fox in a forest, then the same fox on a beach",
    "n_images": 2,
    "checklist": [{"check": "count", "subject": "fox", "value": 1, "image": 0}],
}
EXPERT = ExpertConfig(accept_faulty_rate=0.5, over_reflect_rate=0.5)


async def test_a_branched_group_shares_the_base_prefix_and_differs_after_it(tmp_path: Path) -> None:
    config = CollectConfig(group_size=4, fault_rate=1.0, store=tmp_path / "store", branch_at="reflect")
    async with synthetic_tools(config) as tools:
        records = await collect([MULTI], policy=expert_policy(EXPERT), tools=tools, config=config)
    branches = {r.branch.model_dump_json() if r.branch else None for r in records}
    assert len(branches) == 1
    assert None not in branches
    turn = records[0].branch.turn if records[0].branch else -1
    assert records[0].turns[turn].node == "reflect"
    prefixes = {json.dumps([t.text for t in r.turns[:turn]]) for r in records}
    assert len(prefixes) == 1
    assert len({r.trajectory_id for r in records}) == 4
    assert len({r.group_id for r in records}) == 1
    assert all(r.termination == "answered" for r in records)
    assert len({tuple(t.text for t in r.turns[turn:]) for r in records}) > 1


def test_the_cli_collects_branched_groups_and_ray_refuses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "records.jsonl"
    argv = ["--out", str(out), "--splits", "multi", "--limit", "1", "--group-size", "2", "--fault-rate", "1.0"]
    collect_main([*argv, "--branch-at", "reflect"])
    records = read_records(out)
    assert len(records) == 2
    assert all(r.branch is not None for r in records)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] == 2
    with pytest.raises(SystemExit):
        collect_main([*argv, "--branch-at", "plan"])  # only reflect is a branch node
    with pytest.raises(CollectError, match="without Ray"):
        RayWorkers(lambda tools: expert_policy(), CollectConfig(store=tmp_path, branch_at="reflect"))
