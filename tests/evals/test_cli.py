"""``visioncreator eval`` as a user runs it: a real process, killed mid-run and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from visioncreator.evals.results import ERRORS_FILE, RESULTS_FILE, TaskError, TaskResult
from visioncreator.evals.suites import load_suite, write_suite

WAIT_S = 120.0


def _eval(*args: str) -> list[str]:
    return [sys.executable, "-m", "visioncreator.graph", "eval", *args]


def _ids(results: Path) -> list[str]:
    return [TaskResult.model_validate_json(line).id for line in results.read_text().splitlines()]


def test_a_killed_run_resumes_and_scores_only_the_missing_tasks(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    tasks = load_suite()[:4] + load_suite()[20:22]
    write_suite(tasks, suite)
    out = tmp_path / "run"
    args = _eval("--suite", str(suite), "--out", str(out), "--concurrency", "2", "--fault-rate", "0.3")
    args += ["--tool-latency", "0.2", "--no-report", "--quiet"]
    results = out / RESULTS_FILE
    # A session of its own, so the kill takes the spawned tool server with it.
    log = tmp_path / "first.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (results.exists() and len(results.read_text().splitlines()) >= 2):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no task finished in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    first = results.read_text()
    done_first = _ids(results)
    assert 2 <= len(done_first) < len(tasks), "the kill must leave tasks unscored"

    again = subprocess.run(args[:-1], capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert again.returncode == 0, again.stderr
    outcome = json.loads(again.stdout.strip().splitlines()[-1])
    assert outcome["skipped"] == len(done_first)
    assert outcome["ran"] == len(tasks) - len(done_first)
    assert f"resuming: {len(done_first)} task(s) already scored" in again.stderr
    final = results.read_text()
    assert final.startswith(first)  # nothing already scored was written again
    ids = _ids(results)
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(t.id for t in tasks)


def test_a_malformed_line_is_recorded_and_the_other_tasks_still_run(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    write_suite(load_suite()[:2], suite)
    with suite.open("a") as f:
        f.write("{not json\n")
    out = tmp_path / "run"
    run = subprocess.run(
        _eval("--suite", str(suite), "--out", str(out), "--quiet"), capture_output=True, text=True, timeout=WAIT_S
    )
    assert run.returncode == 0, run.stderr
    assert sorted(_ids(out / RESULTS_FILE)) == sorted(t.id for t in load_suite()[:2])
    (error,) = [TaskError.model_validate_json(x) for x in (out / ERRORS_FILE).read_text().splitlines()]
    assert error.line == 3
    assert error.stage == "load"
    assert "line 3" in error.message
    assert "errors: see" in run.stderr
    assert (out / "report.html").is_file()
    assert (out / "summary.json").is_file()


def test_nothing_to_run_exits_non_zero_and_bad_flags_are_named(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"id": "a", "split": "video", "request": "x", "n_images": 1}\n')
    run = subprocess.run(
        _eval("--suite", str(suite), "--out", str(tmp_path / "run"), "--quiet"),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert run.returncode == 1
    assert '"load_errors": 1' in run.stdout
    bad = subprocess.run(
        _eval("--out", str(tmp_path / "r2"), "--tools", "quantum"), capture_output=True, text=True, timeout=WAIT_S
    )
    assert bad.returncode == 2
    assert "--tools 'quantum'" in bad.stderr
