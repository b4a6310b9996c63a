"""The collector on a pool of worker processes: the same records as the single loop; resume; clear failures.

Real parts: spawned worker processes, each with its own expert and in-process synthetic tool
server, records streamed back over sockets; worker deaths injected with ``os._exit`` in a policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.rl.dying_expert import DyingExpert
from tests.rl.test_collector import EDIT, SINGLE, collect_expert, without_timings
from visioncreator.graph.client import ToolClient
from visioncreator.graph.offline import expert_policy
from visioncreator.policy import Policy
from visioncreator.rl import CollectConfig, CollectError, read_records
from visioncreator.rl.collection.jobs import plan_jobs
from visioncreator.rl.collection.pool import PoolSettings, ProcessWorkers, collect_pool, collect_pool_to
from visioncreator.rl.collection.records import policy_id_of, policy_info
from visioncreator.rl.collection.workers import PolicySpec, checkpointed_threads, worker_checkpoint

SINGLE_Y: dict[str, Any] = {**SINGLE, "id": "single-y", "request": "a yellow kite above a green bus"}
TWO = PoolSettings(workers=2, start_timeout_s=120.0)
WAIT_S = 180.0


def _json(records: list[Any], **exclude: Any) -> dict[str, Any]:
    return {r.trajectory_id: without_timings(r.model_dump(mode="json", **exclude)) for r in records}


async def test_the_pool_collects_the_same_records_as_the_single_loop(tmp_path: Path) -> None:
    config = CollectConfig(group_size=2, concurrency=4, store=tmp_path / "store", fault_rate=0.5)
    local = await collect_expert(config, [SINGLE, EDIT, SINGLE_Y])
    seen: list[str] = []
    with anyio.fail_after(WAIT_S):
        pooled = await collect_pool(
            [SINGLE, EDIT, SINGLE_Y], policy=PolicySpec(), config=config, settings=TWO,
            on_record=lambda r: seen.append(r.trajectory_id),
        )  # fmt: skip
    assert [r.trajectory_id for r in pooled] == [r.trajectory_id for r in local]
    assert [r.rewards for r in pooled] == [r.rewards for r in local]
    assert sorted(seen) == sorted(r.trajectory_id for r in local)
    assert _json(pooled) == _json(local)


async def test_a_pool_serves_several_collections_and_counts_its_cpu(tmp_path: Path) -> None:
    config = CollectConfig(group_size=2, concurrency=2, store=tmp_path / "store", fault_rate=0.5)
    local = await collect_expert(config, [SINGLE, SINGLE_Y])
    with anyio.fail_after(WAIT_S):
        async with ProcessWorkers(PolicySpec(), config, settings=TWO) as pool:
            assert pool.policy_info == policy_info(expert_policy())
            before = await pool.cpu_seconds()
            first = await pool.collect([SINGLE])
            second = await pool.collect([SINGLE, SINGLE_Y], skip=[r.trajectory_id for r in first])
            after = await pool.cpu_seconds()
    assert len(before) == len(after) == 2
    assert sum(after) > sum(before)
    assert _json(first + second) == _json(local)


async def test_each_worker_writes_its_profile_into_a_folder_it_makes(tmp_path: Path) -> None:
    config = CollectConfig(group_size=1, concurrency=2, store=tmp_path / "store", fault_rate=0.0)
    profiles = tmp_path / "not" / "there"
    settings = PoolSettings(workers=2, start_timeout_s=120.0, profile_dir=profiles)
    with anyio.fail_after(WAIT_S):
        records = await collect_pool([SINGLE, SINGLE_Y], policy=PolicySpec(), config=config, settings=settings)
    assert len(records) == 2
    names = sorted(p.name.split("-")[0] for p in profiles.glob("*.prof"))
    assert names == ["worker0", "worker1"]


async def test_the_pool_writes_the_file_and_skips_what_it_holds(tmp_path: Path) -> None:
    config = CollectConfig(group_size=2, concurrency=2, store=tmp_path / "store", fault_rate=0.5)
    out = tmp_path / "records.jsonl"
    local = await collect_expert(config, [SINGLE])
    with anyio.fail_after(WAIT_S):
        written = await collect_pool_to(out, [SINGLE], policy=PolicySpec(), config=config, settings=TWO)
        assert await collect_pool_to(out, [SINGLE], policy=PolicySpec(), config=config, settings=TWO) == []
    assert _json(written) == _json(read_records(out)) == _json(local)


async def test_a_killed_worker_fails_clearly_and_resumes_from_its_own_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    ckpt = tmp_path / "ckpt.sqlite"
    config = CollectConfig(group_size=2, concurrency=2, store=tmp_path / "store", fault_rate=0.5, checkpoint=ckpt)
    tasks = [SINGLE, SINGLE_Y]
    planned = plan_jobs(tasks, config, policy_id_of(policy_info(expert_policy())))
    # Job 0 goes to worker 0, job 1 (sample 1 of single-x, seed 1) to worker 1, whose process dies at reflect.
    pattern = r"sample 1 \(trajectory traj_\w+\): collection worker 1 \(pid \d+\) exited with code 1"
    with anyio.fail_after(WAIT_S), pytest.raises(CollectError, match=pattern):
        await collect_pool_to(out, tasks, policy=DyingExpert, config=config, settings=TWO)
    first = {r.trajectory_id for r in read_records(out)}
    crashed = planned[1].trajectory_id
    assert crashed not in first
    assert first <= {planned[0].trajectory_id, planned[2].trajectory_id}
    assert not ckpt.exists()  # no shared file: one per worker
    assert crashed in checkpointed_threads(worker_checkpoint(ckpt, 1))
    assert crashed not in checkpointed_threads(worker_checkpoint(ckpt, 0))
    # The driver starts again with the sound expert: the half-done trajectory goes back to worker 1's file.
    with anyio.fail_after(WAIT_S):
        written = await collect_pool_to(out, tasks, policy=PolicySpec(), config=config, settings=TWO)
    assert {r.trajectory_id for r in written} == {j.trajectory_id for j in planned} - first
    assert crashed not in checkpointed_threads(worker_checkpoint(ckpt, 0))
    final = read_records(out)
    assert sorted(r.trajectory_id for r in final) == sorted(j.trajectory_id for j in planned)
    clean = await collect_expert(config.model_copy(update={"checkpoint": None, "store": tmp_path / "clean"}), tasks)
    assert _json(final, exclude={"config"}) == _json(clean, exclude={"config"})


def _unknown_model(tools: ToolClient) -> Policy:
    raise CollectError("no such model: /nowhere")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (PolicySpec(kind="transformers"), r"PolicySpec\(kind='transformers'\) needs model, a model directory"),
        (
            PolicySpec(settings={"bad_plan_rat": 0.3}),
            r"PolicySpec\(kind='expert'\) has settings ExpertConfig does not take: .*bad_plan_rat",
        ),
        (_unknown_model, "no such model: /nowhere"),
    ],
)
async def test_a_bad_policy_fails_clearly_before_anything_runs(policy: Any, message: str, tmp_path: Path) -> None:
    config = CollectConfig(store=tmp_path / "store", checkpoint=tmp_path / "ckpt.sqlite")
    out = tmp_path / "records.jsonl"
    start = r"collection worker \d \(pid \d+\) could not start: CollectError: "
    with anyio.fail_after(WAIT_S), pytest.raises(CollectError, match=start + message):
        await collect_pool_to(out, [SINGLE], policy=policy, config=config, settings=TWO)
    assert not out.exists() or read_records(out) == []


async def test_the_pool_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="must be picklable"):
        await collect_pool([SINGLE], policy=lambda tools: expert_policy(), config=CollectConfig(store=tmp_path))
    with pytest.raises(CollectError, match=r"needs CollectConfig\.store"):
        ProcessWorkers(PolicySpec(), CollectConfig())
    with pytest.raises(CollectError, match="collect with one worker"):
        ProcessWorkers(PolicySpec(), CollectConfig(store=tmp_path, branch_at="reflect"))
    with pytest.raises(CollectError, match=r"use ProcessWorkers as `async with"):
        await ProcessWorkers(PolicySpec(), CollectConfig(store=tmp_path)).collect([SINGLE])
