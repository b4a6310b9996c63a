"""Common random numbers: the members of a collected group share their image-call seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visioncreator.graph import call_seed
from visioncreator.graph.offline import expert_policy
from visioncreator.policy import ExpertConfig
from visioncreator.rl import CollectConfig, TrajectoryRecord, collect
from visioncreator.rl.collection.collector import synthetic_tools

MULTI: dict[str, Any] = {
    "id": "multi-x",
    "split": "multi",
    "request": "a red fox in a forest, then the same fox on a beach",
    "n_images": 2,
    "checklist": [{"check": "count", "subject": "fox", "value": 1, "image": 0}],
}
# An expert that errs, so that the members of a group do differ in what they do.
EXPERT = ExpertConfig(accept_faulty_rate=0.3, over_reflect_rate=0.3, skip_reflection_rate=0.2)


async def _group(tmp_path: Path, mode: str) -> list[TrajectoryRecord]:
    config = CollectConfig(group_size=4, fault_rate=0.5, store=tmp_path / "store", call_seeds=mode)  # type: ignore[arg-type]
    async with synthetic_tools(config) as tools:
        return await collect([MULTI], policy=expert_policy(EXPERT), tools=tools, config=config)


def _first_images(record: TrajectoryRecord) -> dict[int | None, Any]:
    first: dict[int | None, Any] = {}
    for call in record.images_made(by="policy"):
        first.setdefault(call.step, call)
    return first


async def test_shared_call_seeds_give_every_member_the_same_first_images(tmp_path: Path) -> None:
    records = await _group(tmp_path, "shared")
    bases = {r.call_seed_base for r in records}
    assert len(bases) == 1
    assert None not in bases
    firsts = [_first_images(r) for r in records]
    for step in firsts[0]:
        calls = [f[step] for f in firsts]
        assert {c.arguments["seed"] for c in calls} == {call_seed(records[0].call_seed_base or 0, step, 0)}
        if all(c.arguments.get("references") == calls[0].arguments.get("references") for c in calls):
            # Same call, same seed: the same image and the same injected faults.
            assert len({c.handle for c in calls}) == 1
    assert records[0].config["call_seeds"] == "shared"


async def test_independent_call_seeds_differ_between_members_and_reruns_reproduce(tmp_path: Path) -> None:
    records = await _group(tmp_path, "independent")
    assert len({r.call_seed_base for r in records}) == len(records)
    again = await _group(tmp_path, "independent")
    assert [[c.handle for c in r.tool_calls] for r in records] == [[c.handle for c in r.tool_calls] for r in again]
