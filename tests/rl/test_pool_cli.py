"""``visioncreator collect`` on worker processes: a killed driver takes its workers along, a re-run resumes.

Real parts: the collect CLI as a process with a pool of 2 spawned workers (I/O-bound synthetic
back end, so the kill lands mid-collection), SIGKILL, and a second run that finishes the file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.rl.test_collector import without_timings
from tests.security._processes import wait_for
from visioncreator.rl import read_records

COLLECT = [sys.executable, "-m", "visioncreator.rl.collection"]
TASKS = ["--splits", "single", "--limit", "5", "--group-size", "2", "--fault-rate", "0.3", "--concurrency", "2"]
WAIT_S = 180.0


def _workers(pid: int) -> list[int]:
    """The spawned worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [p for p in children if b"spawn_main" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # it has just exited
        return b""


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _run(out: Path, *flags: str) -> dict[str, Any]:
    done = subprocess.run(
        [*COLLECT, "--out", str(out), *TASKS, *flags], capture_output=True, text=True, timeout=WAIT_S, check=False
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two records first differ (a path of keys and indexes), with both values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}/{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {str(a)[:300]!r} != {str(b)[:300]!r}"


def _records(path: Path) -> dict[str, Any]:
    return {r.trajectory_id: without_timings(r.model_dump(mode="json")) for r in read_records(path)}


def test_a_killed_driver_stops_its_workers_and_a_rerun_resumes_to_the_single_loop_records(tmp_path: Path) -> None:
    out = tmp_path / "pool" / "records.jsonl"
    driver = subprocess.Popen(
        [*COLLECT, "--out", str(out), *TASKS, "--workers", "2", "--tool-latency-s", "1.0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: len(_workers(driver.pid)) == 2, "two worker processes", driver, wait_s=WAIT_S)
        workers = _workers(driver.pid)
        wait_for(lambda: out.exists() and len(read_records(out)) >= 1, "a first record", driver, wait_s=WAIT_S)
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=WAIT_S)
    # Each worker sees its socket close and exits on its own.
    wait_for(lambda: all(_gone(pid) for pid in workers), "the workers to exit after their driver", wait_s=WAIT_S)
    first = read_records(out)
    assert 1 <= len(first) < 10
    summary = _run(out, "--workers", "2")
    assert summary["written"] == 10 - len(first)
    single = tmp_path / "single" / "records.jsonl"
    assert _run(single, "--workers", "1")["written"] == 10
    final = read_records(out)
    assert len({r.trajectory_id for r in final}) == len(final) == 10
    pooled, alone = _records(out), _records(single)
    assert pooled == alone, _first_difference(pooled, alone)
