"""An eval run folder: names stay inside it, suites read only beside themselves, one writer, outages never scored.

Real parts throughout: the eval CLI as a process, the spawned synthetic tool server, a real HTTP
tool server process that is killed mid-run and started again on the same port and store, and
real ``flock`` locks held by other processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from tests.security._processes import lock_holder, wait_for
from tests.security._tool_server import RestartableServer

from visioncreator.evals import EvalSettings, load_suite, run_eval, write_suite
from visioncreator.evals.report import summarize
from visioncreator.evals.results import ERRORS_FILE, RESULTS_FILE, TaskError, TaskResult, read_results, record_name
from visioncreator.evals.suites import ALLOW_OUTSIDE_FLAG, InputImage, SuiteError, load_suite_checked, materialize_input
from visioncreator.graph import FolderLock
from visioncreator.tool_servers import ImageStore

WAIT_S = 120.0
EVAL = [sys.executable, "-m", "visioncreator.graph", "eval"]
HOSTILE_IDS = ["../../x", "/abs", "a/../../b", "x/1", "x_1", "X_1", "..", "ü/../../ü"]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _eval(*args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EVAL, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_record_names_are_unique_per_exact_id_even_without_case_and_plain_ids_keep_theirs() -> None:
    ids = [*HOSTILE_IDS, "single-000", "Single-000", "x_1+0123456789", "a" * 300, "a" * 301, "", "\ud800"]
    names = [record_name(i) for i in ids]
    assert len({n.lower() for n in names}) == len(ids)  # distinct on a case-insensitive file system too
    assert record_name("single-000") == "single-000"
    assert record_name("x_1") == "x_1"
    for name in names:
        assert re.fullmatch(r"[a-z0-9._+-]{1,111}", name), name
        assert not name.startswith(".")


async def test_hostile_task_ids_write_only_inside_the_run_folder_and_never_share_a_file(tmp_path: Path) -> None:
    template = next(t for t in load_suite() if t.split == "single")
    suite = tmp_path / "suites" / "suite.jsonl"
    suite.parent.mkdir()
    write_suite([template.model_copy(update={"id": i}) for i in HOSTILE_IDS], suite)
    before = _files(tmp_path)
    out = tmp_path / "deep" / "run"
    async with asyncio.timeout(WAIT_S):
        outcome = await run_eval(EvalSettings(out=out, suite=suite, concurrency=4))
    assert (outcome.ran, outcome.failed, outcome.load_errors) == (len(HOSTILE_IDS), 0, 0)
    created = _files(tmp_path) - before
    root = out.resolve()
    outside = [p for p in created if root not in p.resolve().parents]
    assert outside == []
    results = read_results(out)
    assert sorted(r.id for r in results) == sorted(HOSTILE_IDS)
    trajectories = {r.id: (out / r.trajectory).resolve() for r in results}
    assert len(set(trajectories.values())) == len(HOSTILE_IDS)  # x/1, x_1 and X_1 each kept their own
    for task_id, path in trajectories.items():
        assert path.parent == root / "trajectories"
        assert json.loads(path.read_text())["task"]["id"] == task_id


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, format="PNG")
    return path


def _edit_suite(folder: Path, *paths: str) -> Path:
    template = next(t for t in load_suite() if t.split == "img2img")
    tasks = [
        template.model_copy(update={"id": f"edit-{k}", "inputs": (InputImage(path=p),), "checklist": ()})
        for k, p in enumerate(paths)
    ]
    suite = folder / "suite.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    write_suite(tasks, suite)
    return suite


async def test_suite_input_paths_that_leave_the_suite_folder_are_refused_before_anything_is_read(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "suite"
    _png(folder / "images" / "inside.png")
    outside = _png(tmp_path / "private" / "secret.png")
    fifo = tmp_path / "private" / "pipe"
    os.mkfifo(fifo)  # reading it would block: a refusal that reads nothing returns at once
    (folder / "images" / "link.png").symlink_to(outside)
    deep = "../" * (len(folder.resolve().parts) + 2) + "etc/passwd"
    suite = _edit_suite(
        folder, "images/inside.png", "../private/secret.png", "images/link.png", "../private/pipe", deep
    )

    loaded = load_suite_checked(suite)
    assert [t.id for t in loaded.tasks] == ["edit-0"]
    refused = {str(e.id): e.message for e in loaded.errors}
    assert sorted(refused) == ["edit-1", "edit-2", "edit-3", "edit-4"]
    for message in refused.values():
        assert "outside the suite's folder" in message
        assert ALLOW_OUTSIDE_FLAG in message
    assert "'../private/secret.png'" in refused["edit-1"]
    assert "'images/link.png'" in refused["edit-2"]  # a link is judged by where it leads
    assert "etc/passwd" in refused["edit-4"]

    allowed = load_suite_checked(suite, allow_outside_inputs=True)
    assert sorted(t.id for t in allowed.tasks) == ["edit-0", "edit-1", "edit-2", "edit-4"]  # a pipe is no file

    store = ImageStore(tmp_path / "store")
    async with asyncio.timeout(10):  # the read-time check too: the pipe is never opened
        with pytest.raises(SuiteError, match=r"'\.\./private/pipe' leads outside"):
            await materialize_input(store, InputImage(path="../private/pipe"), folder.resolve())
    handle, scene = await materialize_input(store, InputImage(path="../private/secret.png"), folder, allow_outside=True)
    assert scene is None
    assert store.path_of(handle).is_file()


def test_the_cli_reads_outside_inputs_only_with_the_flag(tmp_path: Path) -> None:
    folder = tmp_path / "suite"
    _png(tmp_path / "elsewhere" / "photo.png")
    suite = _edit_suite(folder, "../elsewhere/photo.png")
    refused = _eval("--suite", str(suite), "--out", str(tmp_path / "a"), "--quiet", "--no-report")
    assert refused.returncode == 1, refused.stderr
    (error,) = [TaskError.model_validate_json(x) for x in (tmp_path / "a" / ERRORS_FILE).read_text().splitlines()]
    assert error.stage == "load"
    assert "'../elsewhere/photo.png'" in error.message
    assert ALLOW_OUTSIDE_FLAG in error.message
    assert not (tmp_path / "a" / RESULTS_FILE).exists()
    allowed = _eval("--suite", str(suite), "--out", str(tmp_path / "b"), "--quiet", "--no-report", ALLOW_OUTSIDE_FLAG)
    assert allowed.returncode == 0, allowed.stderr
    (result,) = read_results(tmp_path / "b")
    assert result.id == "edit-0"
    assert len(result.inputs) == 1


def test_an_empty_suite_or_a_filter_that_matches_nothing_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    run = _eval("--suite", str(empty), "--out", str(tmp_path / "a"), "--quiet")
    assert run.returncode == 1
    assert f"suite {empty} has no tasks" in run.stderr
    single = tmp_path / "single.jsonl"
    write_suite(load_suite()[:2], single)
    run = _eval("--suite", str(single), "--out", str(tmp_path / "b"), "--quiet", "--splits", "multi")
    assert run.returncode == 1
    assert "no task matches --splits multi" in run.stderr
    assert "has 2 task(s)" in run.stderr


def test_a_corrupt_record_line_or_run_file_is_named_with_the_way_out(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    write_suite(load_suite()[:3], suite)
    out = tmp_path / "run"
    args = ("--suite", str(suite), "--out", str(out), "--quiet", "--no-report", "--limit", "2")
    assert _eval(*args).returncode == 0
    results = out / RESULTS_FILE
    good = results.read_bytes()
    first, second = good.splitlines()
    results.write_bytes(first[:40] + b"\n" + second + b"\n")
    run = _eval(*args)
    assert run.returncode == 2
    assert f"{results}: line 1 is not a TaskResult" in run.stderr
    assert "fix or delete line 1 of that file" in run.stderr
    assert "validation error" not in run.stderr  # pydantic's report is not dumped on the user
    results.write_bytes(good + second[:30])  # a torn last line is repaired, as before
    assert _eval(*args).returncode == 0
    assert results.read_bytes() == good
    (out / "run.json").write_text('{"suite": 3')
    run = _eval(*args)
    assert run.returncode == 2
    assert f"{out / 'run.json'} is not a RunInfo record" in run.stderr


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding ``FolderLock(tmp_path / 'run')`` until the test ends."""
    acquire = "from visioncreator.graph import FolderLock; FolderLock(sys.argv[1]).acquire()"
    with lock_holder(acquire, str(tmp_path / "run")) as proc:
        yield proc


def test_a_second_eval_on_a_folder_stops_at_once_naming_the_pid_and_writes_nothing(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    out = tmp_path / "run"
    run = _eval("--out", str(out), "--limit", "1", "--quiet", "--no-report")
    assert run.returncode == 2
    assert f"{out} is already in use: an eval is already running there (pid {holder.pid})" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=30)  # the holder is gone (no clean-up needed: the kernel dropped its lock)
    run = _eval("--out", str(out), "--limit", "1", "--quiet", "--no-report")
    assert run.returncode == 0, run.stderr
    with FolderLock(out, what="an eval"):  # released by the eval that finished
        pass


def test_two_eval_processes_on_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--out", str(out), "--limit", "4", "--concurrency", "1", "--tool-latency", "0.5", "--quiet", "--no-report"]
    log = tmp_path / "first.log"
    with log.open("wb") as sink:
        first = subprocess.Popen([*EVAL, *args], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: (out / "run.json").exists(), "the first eval to start", first)
        second = _eval(*args)
        assert second.returncode == 2
        assert f"an eval is already running there (pid {first.pid})" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)


def test_a_corrupt_checkpoint_is_named_and_restart_moves_it_aside_keeping_the_results(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    write_suite(load_suite()[:3], suite)
    out = tmp_path / "run"
    args = ("--suite", str(suite), "--out", str(out), "--quiet", "--no-report")
    assert _eval(*args, "--limit", "2").returncode == 0
    scored = (out / RESULTS_FILE).read_text()
    checkpoint = out / "checkpoints.sqlite"
    checkpoint.write_bytes(b"this is not a database" * 300)
    run = _eval(*args)
    assert run.returncode == 2
    assert f"the checkpoint {checkpoint} is corrupt" in run.stderr
    assert "--restart" in run.stderr
    assert (out / RESULTS_FILE).read_text() == scored
    run = _eval(*args, "--restart")
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert (outcome["skipped"], outcome["ran"]) == (2, 1)
    (moved,) = out.glob("checkpoints.sqlite.corrupt-*")
    assert outcome["checkpoint_moved_to"] == str(moved)
    assert moved.read_bytes().startswith(b"this is not a database")
    assert (out / RESULTS_FILE).read_text().startswith(scored)


def test_a_tool_server_lost_mid_run_is_an_infrastructure_error_and_the_same_command_finishes_later(
    tmp_path: Path, restartable_server: RestartableServer
) -> None:
    restartable_server.start("--latency", "0.4")
    suite = tmp_path / "suite.jsonl"
    tasks = load_suite()[:6]
    write_suite(tasks, suite)
    out = tmp_path / "run"
    args = ["--suite", str(suite), "--out", str(out), "--tools", restartable_server.url, "--concurrency", "2"]
    args += ["--exact-perception", "--quiet", "--no-report"]  # exact: every honest result is a success
    results = out / RESULTS_FILE
    log = tmp_path / "eval.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([*EVAL, *args], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: results.exists() and results.read_text().count("\n") >= 1, "a first result", proc)
        restartable_server.kill()
        proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    said = log.read_text()
    assert proc.returncode == 3, said
    assert "tool server lost:" in said
    assert "run the same command again to resume them" in said
    first = read_results(out)
    assert 1 <= len(first) < len(tasks)
    assert all(r.success for r in first)  # nothing the outage cut short was scored as a failure
    errors = [TaskError.model_validate_json(x) for x in (out / ERRORS_FILE).read_text().splitlines()]
    assert errors, "the tasks the outage stopped are recorded"
    assert {e.stage for e in errors} == {"infrastructure"}
    assert "ToolServerLost" in errors[0].message or "ToolServerUnavailable" in errors[0].message
    outcome = json.loads(next(x for x in said.splitlines() if x.startswith("{")))
    assert outcome["infrastructure"] == len(errors)
    assert outcome["ran"] + outcome["infrastructure"] + outcome["not_run"] == len(tasks)
    summary = summarize(out)
    assert summary.overall.tasks == len(first)  # outages are not policy failures
    assert summary.overall.success_rate == 1.0
    assert summary.errors_by_stage == {"infrastructure": len(errors)}

    restartable_server.start()  # same port, same store
    again = subprocess.run([*EVAL, *args], capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert again.returncode == 0, again.stderr
    final = read_results(out)
    assert sorted(r.id for r in final) == sorted(t.id for t in tasks)
    assert all(r.success for r in final)
    assert results.read_text().count("\n") == len(tasks)  # nothing scored twice
    assert summarize(out).errors == 0  # the retried tasks' outage records no longer count
    assert all(isinstance(r, TaskResult) for r in final)
