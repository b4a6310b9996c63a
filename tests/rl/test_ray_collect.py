"""The collector on a local Ray cluster of 2 CPUs: the same records as the local path; checkpoints per worker."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.rl.dying_expert import DyingExpert
from tests.rl.test_collector import EDIT, SINGLE, collect_expert, without_timings
from visioncreator.graph.offline import expert_policy
from visioncreator.rl import CollectConfig, CollectError, read_records
from visioncreator.rl.collection.jobs import plan_jobs
from visioncreator.rl.collection.ray import (
    PolicySpec,
    RayWorkers,
    checkpointed_threads,
    collect_ray,
    collect_ray_to,
    worker_checkpoint,
)
from visioncreator.rl.collection.records import policy_id_of, policy_info

SINGLE_Y: dict[str, Any] = {**SINGLE, "id": "single-y", "request": "a yellow kite above a green bus"}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the module (starting one costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _json(records: list[Any], **exclude: Any) -> dict[str, Any]:
    return {r.trajectory_id: without_timings(r.model_dump(mode="json", **exclude)) for r in records}


async def test_ray_collects_the_same_records_as_the_local_path(ray_cluster: None, tmp_path: Path) -> None:
    config = CollectConfig(group_size=2, concurrency=2, store=tmp_path / "store", fault_rate=0.5)
    local = await collect_expert(config, [SINGLE, EDIT])
    seen: list[str] = []
    with anyio.fail_after(180):
        remote = await collect_ray(
            [SINGLE, EDIT], policy=PolicySpec(), config=config, address="local", workers=2,
            on_record=lambda r: seen.append(r.trajectory_id),
        )  # fmt: skip
    assert [r.trajectory_id for r in remote] == [r.trajectory_id for r in local]
    assert sorted(seen) == sorted(r.trajectory_id for r in local)
    assert _json(remote) == _json(local)


async def test_ray_writes_the_file_and_skips_what_it_holds(ray_cluster: None, tmp_path: Path) -> None:
    config = CollectConfig(group_size=2, concurrency=2, store=tmp_path / "store", fault_rate=0.5)
    out = tmp_path / "records.jsonl"
    local = await collect_expert(config, [SINGLE])
    with anyio.fail_after(180):
        written = await collect_ray_to(out, [SINGLE], policy=PolicySpec(), config=config, workers=1)
        assert await collect_ray_to(out, [SINGLE], policy=PolicySpec(), config=config, workers=1) == []
    assert _json(written) == _json(read_records(out)) == _json(local)


async def test_a_pool_of_workers_serves_several_collections(ray_cluster: None, tmp_path: Path) -> None:
    config = CollectConfig(group_size=2, concurrency=2, store=tmp_path / "store", fault_rate=0.5)
    local = await collect_expert(config, [SINGLE, SINGLE_Y])
    with anyio.fail_after(180):
        async with RayWorkers(PolicySpec(), config, workers=1) as pool:
            assert pool.policy_info == policy_info(expert_policy())
            before = await pool.cpu_seconds()
            first = await pool.collect([SINGLE])
            second = await pool.collect([SINGLE, SINGLE_Y], skip=[r.trajectory_id for r in first])
            after = await pool.cpu_seconds()
    assert len(before) == len(after) == 1
    assert after[0] > before[0]
    assert _json(first + second) == _json(local)


async def test_ray_needs_a_shared_store_and_a_worker(ray_cluster: None, tmp_path: Path) -> None:
    with pytest.raises(CollectError, match=r"needs CollectConfig\.store"):
        await collect_ray([SINGLE], policy=PolicySpec(), config=CollectConfig())
    with pytest.raises(CollectError, match="workers must be at least 1, got 0"):
        RayWorkers(PolicySpec(), CollectConfig(store=tmp_path), workers=0)
    with pytest.raises(CollectError, match="needs model"):
        PolicySpec(kind="transformers").build(tools=None)  # type: ignore[arg-type]
    with pytest.raises(CollectError, match=r"use RayWorkers as `async with"):
        await RayWorkers(PolicySpec(), CollectConfig(store=tmp_path)).collect([SINGLE])


def test_worker_checkpoint_files_and_their_threads(tmp_path: Path) -> None:
    assert worker_checkpoint(tmp_path / "records.sqlite", 1) == tmp_path / "records.worker1.sqlite"
    assert worker_checkpoint(tmp_path / "ckpt", 0) == tmp_path / "ckpt.worker0.sqlite"
    assert checkpointed_threads(tmp_path / "missing.sqlite") == set()
    assert not (tmp_path / "missing.sqlite").exists()
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    assert checkpointed_threads(empty) == set()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database, but long enough to be read as a header by sqlite" * 2)
    with pytest.raises(sqlite3.DatabaseError):
        checkpointed_threads(bad)


async def test_a_killed_worker_resumes_from_its_own_checkpoint(ray_cluster: None, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    ckpt = tmp_path / "ckpt.sqlite"
    config = CollectConfig(group_size=2, concurrency=1, store=tmp_path / "store", fault_rate=0.5, checkpoint=ckpt)
    tasks = [SINGLE, SINGLE_Y]
    planned = plan_jobs(tasks, config, policy_id_of(policy_info(expert_policy())))
    # Job 0 goes to worker 0, job 1 (sample 1 of single-x, seed 1) to worker 1, whose process dies at reflect.
    with anyio.fail_after(180), pytest.raises(CollectError, match=r"sample 1 \(trajectory traj_"):
        await collect_ray_to(out, tasks, policy=DyingExpert, config=config, workers=2)
    first = {r.trajectory_id for r in read_records(out)}
    crashed = planned[1].trajectory_id
    assert crashed not in first
    assert first <= {planned[0].trajectory_id, planned[2].trajectory_id}
    assert not ckpt.exists()  # no shared file: one per worker
    assert crashed in checkpointed_threads(worker_checkpoint(ckpt, 1))
    assert crashed not in checkpointed_threads(worker_checkpoint(ckpt, 0))
    # The driver starts again with the sound expert: the half-done trajectory goes back to worker 1's file.
    with anyio.fail_after(180):
        written = await collect_ray_to(out, tasks, policy=PolicySpec(), config=config, workers=2)
    assert {r.trajectory_id for r in written} == {j.trajectory_id for j in planned} - first
    assert crashed not in checkpointed_threads(worker_checkpoint(ckpt, 0))
    final = read_records(out)
    assert sorted(r.trajectory_id for r in final) == sorted(j.trajectory_id for j in planned)
    clean = await collect_expert(config.model_copy(update={"checkpoint": None, "store": tmp_path / "clean"}), tasks)
    # Resumed trajectories are whole (a killed worker can leave a step's writes without the next checkpoint).
    assert _json(final, exclude={"config"}) == _json(clean, exclude={"config"})
