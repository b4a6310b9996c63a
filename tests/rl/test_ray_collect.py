"""The collector on a local Ray cluster of 2 CPUs: the same records as the local path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.rl.test_collector import EDIT, SINGLE, collect_expert, without_timings
from visioncreator.rl.collector import CollectConfig, CollectError
from visioncreator.rl.ray_collect import PolicySpec, collect_ray, collect_ray_to
from visioncreator.rl.records import read_records


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the module (starting one costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _json(records: list[Any]) -> dict[str, Any]:
    return {r.trajectory_id: without_timings(r.model_dump(mode="json")) for r in records}


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


async def test_ray_needs_a_shared_store(ray_cluster: None) -> None:
    with pytest.raises(CollectError, match=r"needs CollectConfig\.store"):
        await collect_ray([SINGLE], policy=PolicySpec(), config=CollectConfig())
    with pytest.raises(CollectError, match="needs model"):
        PolicySpec(kind="transformers").build(tools=None)  # type: ignore[arg-type]
