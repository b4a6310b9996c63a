"""``visioncreator run`` writes only inside ``--out``, one run at a time, and says what to do with a bad checkpoint.

Real processes throughout: the CLI, its spawned stdio tool server, and for handles a hostile MCP
server over HTTP (tests/fakes/hostile_tool_server.py) that answers with paths instead of handles.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.fakes.chat_server import Completion, FakeChatServer, Status

from visioncreator.graph import (
    AgentConfig,
    CheckpointCorruptError,
    FolderLockedError,
    InvalidTaskError,
    PathEscapeError,
    RetrySettings,
    ToolServerLost,
)
from visioncreator.graph.cli import EXIT_BUSY, _agent_config, _parser, _stopped, main

CLI = [sys.executable, "-m", "visioncreator.graph"]
HOSTILE = Path(__file__).resolve().parent.parent / "fakes" / "hostile_tool_server.py"
MULTI = (
    "Three images of the same brown dog: a brown dog next to a red car; "
    "a brown dog below a blue umbrella; a brown dog next to a bench"
)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@contextmanager
def hostile_server(handle: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HOSTILE), "--handle", handle],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    url = None
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
            break
        if time.monotonic() > deadline:
            break
    try:
        assert url, "the hostile tool server did not start"
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stderr.close()


# ---- handles from the tool server never name a file outside --out ------------------------------


@pytest.mark.parametrize("handle", ["../../../x/evil", "..", "/etc/x", "a/b", "img_" + "0" * 23 + "/"])
def test_a_hostile_handle_is_refused_and_nothing_is_written_outside_out(tmp_path: Path, handle: str) -> None:
    out = tmp_path / "deep" / "er" / "out"
    before = files_under(tmp_path)
    with hostile_server(handle) as url:
        done = run_cli("run", "a red car", "--out", str(out), "--tools-url", url, "--max-turns", "8")
    assert done.returncode == 1, done.stderr
    assert f"the tool server returned {handle!r} as an image handle, which is not one" in done.stderr
    assert "Traceback" not in done.stderr
    assert "run the same command again" not in done.stderr  # the same server would answer the same
    created = files_under(tmp_path) - before
    assert created, "the run wrote nothing at all (not even its lock and checkpoint)"
    root = out.resolve()
    for path in created:
        assert root in path.resolve().parents, f"{path} was written outside --out"
    # Nothing was saved from the refused answer: no image, no record, no report.
    assert not list(out.glob("image_*.png"))
    assert not (out / "trajectory.json").exists()
    assert not list(out.glob("images/*"))


def test_a_hostile_handle_for_an_uploaded_input_is_refused(tmp_path: Path, png_file: Path) -> None:
    out = tmp_path / "out"
    with hostile_server("../../up") as url:
        done = run_cli("run", "make it blue", "--image", str(png_file), "--out", str(out), "--tools-url", url)
    assert done.returncode == 1, done.stderr
    assert "the tool server returned '../../up' as an image handle" in done.stderr
    assert not (tmp_path.parent / "up.png").exists()


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "input.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(path)
    return path


# ---- one run per --out ---------------------------------------------------------------------------


def test_a_second_run_on_the_same_out_stops_at_once_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    log = tmp_path / "calls.jsonl"
    # Slow images (3 x 4 s) keep the first run going while the second starts (seconds, on a busy machine).
    args = ["run", MULTI, "--n", "3", "--out", str(out), "--tool-latency", "4", "--tool-log", str(log)]
    first = subprocess.Popen(
        [*CLI, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert first.stderr is not None
        deadline = time.monotonic() + 90
        for line in first.stderr:
            if line.startswith("task: "):  # printed once the lock is held and the task started
                break
            assert time.monotonic() < deadline, "the first run never started its task"
        second = run_cli(*args, timeout=60)
        # The second gave up without waiting for the first: that one is still making images.
        assert first.poll() is None, "the first run finished before the second gave up: raise --tool-latency"
        rest, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
    assert second.returncode == EXIT_BUSY, second.stderr
    assert f"a run is already running there (pid {first.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert "run the same command again" not in second.stderr
    assert first.returncode == 0
    summary = json.loads(rest)
    assert len(summary["images"]) == 3
    # The tool server of one task only: each logged image is one of the first run's calls, once.
    trajectory = json.loads((out / "trajectory.json").read_text())
    made = [c["handle"] for c in trajectory["tool_calls"] if c["ok"] and c["name"] != "inspect_image"]
    logged = [json.loads(line)["handle"] for line in log.read_text().splitlines()]
    assert sorted(logged) == sorted(made)
    # The lock was given back: a third run on the folder resumes the finished thread at once.
    third = run_cli(*args, "--quiet")
    assert third.returncode == 0, third.stderr


def test_out_naming_a_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert main(["run", "a cat", "--out", str(target)]) == 2
    assert f"--out: {target} is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"
    assert files_under(tmp_path) == {target}


# ---- a corrupt checkpoint: say so, and --restart moves it aside ---------------------------------


@pytest.mark.parametrize("content", [b"this is not a database" * 200, b""], ids=["garbage", "empty"])
def test_a_corrupt_checkpoint_is_reported_then_restart_moves_it_aside(tmp_path: Path, content: bytes) -> None:
    out = tmp_path / "out"
    out.mkdir()
    checkpoint = out / "checkpoints.sqlite"
    checkpoint.write_bytes(content)
    done = run_cli("run", "a red car", "--out", str(out))
    assert done.returncode == 1
    assert str(checkpoint) in done.stderr
    assert "--restart" in done.stderr
    assert "corrupt" in done.stderr
    assert "Traceback" not in done.stderr
    assert "run the same command again" not in done.stderr
    assert checkpoint.read_bytes() == content  # reported, not touched
    assert not (out / "store").exists(), "a tool server was spawned before the checkpoint was checked"

    again = run_cli("run", "a red car", "--out", str(out), "--restart")
    assert again.returncode == 0, again.stderr
    (aside,) = out.glob("checkpoints.sqlite.corrupt-*")
    assert aside.read_bytes() == content
    assert f"moved the checkpoint aside to {aside}" in again.stderr
    assert json.loads(again.stdout)["termination"] == "answered"
    assert checkpoint.stat().st_size > 0


def test_a_corrupt_checkpoint_elsewhere_is_reported_by_its_path(tmp_path: Path) -> None:
    checkpoint = tmp_path / "elsewhere" / "ck.sqlite"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"\0" * 4096)
    done = run_cli("run", "a red car", "--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint))
    assert done.returncode == 1
    assert str(checkpoint) in done.stderr
    assert "--restart" in done.stderr


# ---- the policy knobs reach the run ---------------------------------------------------------------


def test_policy_timeout_and_retries_reach_the_agent_config(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli("run", "a red car", "--out", str(out), "--policy-timeout", "42.5", "--policy-retries", "0")
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "trajectory.json").read_text())["config"]
    assert config["policy_timeout_s"] == 42.5
    assert config["policy_attempts"] == 1  # no retry: the first attempt only


def test_unset_policy_knobs_keep_the_agent_config_defaults(tmp_path: Path) -> None:
    parser = _parser({}, describe=False)
    config = _agent_config(parser.parse_args(["run", "a cat", "--out", str(tmp_path)]))
    assert config.policy_timeout_s == AgentConfig().policy_timeout_s
    assert config.policy_retry == RetrySettings()
    config = _agent_config(parser.parse_args(["run", "a cat", "--out", str(tmp_path), "--policy-retries", "4"]))
    assert config.policy_retry.max_attempts == 5


@pytest.mark.parametrize("retries", [0, 2])
def test_policy_retries_reach_an_http_policy(tmp_path: Path, retries: int) -> None:
    chat = FakeChatServer()
    chat.set(Status(503, "overloaded"))
    with chat.running():
        done = run_cli(
            "run", "a red car", "--out", str(tmp_path / "out"), "--policy", chat.base_url, "--model", "fake",
            "--policy-retries", str(retries),
        )  # fmt: skip
    assert done.returncode == 1
    assert "503" in done.stderr
    assert len(chat.requests) == retries + 1


def test_policy_timeout_reaches_an_http_policy(tmp_path: Path) -> None:
    chat = FakeChatServer()
    slow_s = 30.0
    chat.set(Completion(delay_s=slow_s))
    with chat.running():
        started = time.monotonic()
        done = run_cli(
            "run", "a red car", "--out", str(tmp_path / "out"), "--policy", chat.base_url, "--model", "fake",
            "--policy-timeout", "1", "--policy-retries", "0",
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert re.search(r"longer than 1 s|timeout_s=1\.0", done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    # Without the knob the run would wait for the slow answer (the defaults are 120 s and 300 s).
    assert elapsed < slow_s, f"a 1 s policy timeout took {elapsed:.1f} s"


@pytest.mark.parametrize(
    ("flag", "value"), [("--policy-timeout", "0"), ("--policy-timeout", "-1"), ("--policy-retries", "-1")]
)
def test_bad_policy_knobs_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["run", "a cat", "--out", str(tmp_path / "out"), flag, value])
    assert stopped.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---- what the CLI advises when a run stops ----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "says", "resumes"),
    [
        (
            ExceptionGroup("task group", [ToolServerLost("the connection closed.")]),
            1,
            "visioncreator: error: the tool server was lost mid-task: the connection closed. Finished steps are "
            "checkpointed: run the same command again to resume (a spawned server is restarted).",
            True,
        ),
        (FolderLockedError("out is already in use (pid 7)"), EXIT_BUSY, "(pid 7)", False),
        (CheckpointCorruptError("the checkpoint x is corrupt; ... --restart"), 1, "--restart", False),
        (PathEscapeError("the tool server returned '..'"), 1, "returned '..'", False),
        (InvalidTaskError("the tool server refused the input image"), 1, "refused the input image", False),
        (ConnectionResetError("peer reset"), 1, "ConnectionResetError: peer reset", True),
    ],
)
def test_a_stopped_run_advises_a_rerun_only_where_it_resumes(
    capsys: pytest.CaptureFixture[str], error: Exception, status: int, says: str, resumes: bool
) -> None:
    assert _stopped(error, debug=False) == status
    err = capsys.readouterr().err
    assert says in err
    assert ("run the same command again to resume" in err) is resumes


def test_help_documents_the_exit_statuses_and_the_folder_rules(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert EXIT_BUSY == 75
    assert "75 another run holds --out" in text
    assert "--restart" in text
    assert "even when --checkpoint" in text
