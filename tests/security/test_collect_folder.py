"""A collection's records file: one writer at a time, and a lost tool server is an outage, never a record.

Real parts: the collect CLI as a process, locks held by another process, and a real HTTP tool
server process killed mid-collection and started again on the same port and store.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.security._processes import lock_holder
from tests.security._tool_server import RestartableServer

from visioncreator.evals import load_suite
from visioncreator.graph import ToolClient, ToolServerSpec, expert_policy
from visioncreator.rl import CollectConfig, collect_to, read_records
from visioncreator.rl.collection import cli
from visioncreator.rl.collection.run import INFRASTRUCTURE_FAILURE, CollectOutageError

WAIT_S = 120.0
COLLECT = [sys.executable, "-m", "visioncreator.rl.collection"]
SMALL = ["--splits", "single", "--limit", "1", "--group-size", "1", "--fault-rate", "0"]


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """``records.jsonl`` in ``tmp_path/out``, its lock held by another process (its pid) until the test ends."""
    records = tmp_path / "out" / "records.jsonl"
    acquire = "from visioncreator.rl.collection.run import records_lock; records_lock(sys.argv[1]).acquire()"
    with lock_holder(acquire, str(records)) as proc:
        yield records, proc.pid


def test_a_second_collection_into_one_file_stops_naming_the_pid_and_another_file_beside_it_runs(
    held: tuple[Path, int],
) -> None:
    records, pid = held
    run = subprocess.run(
        [*COLLECT, "--out", str(records), *SMALL], capture_output=True, text=True, timeout=WAIT_S, check=False
    )
    assert run.returncode == 2
    assert f"{records} is already in use: a collection is already writing it (pid {pid})" in run.stderr
    assert sorted(p.name for p in records.parent.iterdir()) == ["records.jsonl.lock"]  # nothing written
    beside = records.with_name("other.jsonl")
    run = subprocess.run(
        [*COLLECT, "--out", str(beside), *SMALL], capture_output=True, text=True, timeout=WAIT_S, check=False
    )
    assert run.returncode == 0, run.stderr
    assert len(read_records(beside)) == 1
    assert not records.exists()


def test_the_cli_exits_3_with_the_message_when_the_tool_server_is_lost(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def lost(options: object) -> None:  # the fault: what run_jobs raises when a job meets an outage
        raise CollectOutageError(f"task t sample 0 (trajectory traj_x): {INFRASTRUCTURE_FAILURE}: ToolServerLost: gone")

    monkeypatch.setattr(cli, "_collect", lost)
    assert cli.main(["--out", str(tmp_path / "r.jsonl")]) == 3
    assert "not recorded; run again to collect the missing trajectories" in capsys.readouterr().err


async def test_a_tool_server_lost_mid_collection_records_nothing_of_it_and_a_rerun_collects_the_rest(
    tmp_path: Path, restartable_server: RestartableServer
) -> None:
    restartable_server.start("--latency", "0.3")
    tasks = [t for t in load_suite() if t.split == "single"][:3]
    cfg = CollectConfig(
        group_size=2,
        concurrency=2,
        fault_rate=0.0,
        store=restartable_server.store,
        checkpoint=tmp_path / "records.sqlite",
    )
    path = tmp_path / "records.jsonl"

    recorded = asyncio.Event()  # set once the first record is on disk (on_record runs after the append)

    async def kill_after_the_first_record() -> None:
        await recorded.wait()
        await asyncio.to_thread(restartable_server.kill)

    async with asyncio.timeout(WAIT_S):
        killer = asyncio.ensure_future(kill_after_the_first_record())
        async with ToolClient(spec=ToolServerSpec(url=restartable_server.url)) as tools:
            with pytest.raises(CollectOutageError, match=re.escape(INFRASTRUCTURE_FAILURE)):
                await collect_to(
                    path, tasks, policy=expert_policy(), tools=tools, config=cfg, on_record=lambda r: recorded.set()
                )
        await killer
    first = read_records(path)
    assert 1 <= len(first) < 2 * len(tasks)
    assert all(r.termination == "answered" for r in first)  # only trajectories that finished were recorded

    await asyncio.to_thread(restartable_server.start)  # same port, same store
    async with asyncio.timeout(WAIT_S), ToolClient(spec=ToolServerSpec(url=restartable_server.url)) as tools:
        added = await collect_to(path, tasks, policy=expert_policy(), tools=tools, config=cfg)
    final = read_records(path)
    assert len(added) == 2 * len(tasks) - len(first)
    assert len({r.trajectory_id for r in final}) == len(final) == 2 * len(tasks)
    assert all(r.termination == "answered" for r in final)
