"""Issue 14.7, a CLI that explains itself: every command run for real, in a subprocess (or through ``main``).

Help shows defaults; a bad argument is one line naming the option and exit status 2 before anything
starts; a missing extra names the ``pip install``; a run that never started leaves no folder; a
resumed run says so and keeps its time; long work shows progress as a bar on a terminal and as
plain lines elsewhere.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from visioncreator.graph.cli import main

CLI = [sys.executable, "-m", "visioncreator.graph"]
TOOLS = [sys.executable, "-m", "visioncreator.tool_servers"]
MISSING_EXTRAS = Path(__file__).parent / "fakes" / "missing_extras"
UNREACHABLE = "http://127.0.0.1:1"


def _run(
    argv: list[str], *, timeout: float = 120, missing: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if missing:  # fault injection: these modules cannot be imported in the child (tests/fakes/missing_extras)
        env["PYTHONPATH"] = os.pathsep.join([str(MISSING_EXTRAS), env.get("PYTHONPATH", "")])
        env["VISIONCREATOR_TEST_MISSING"] = missing
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL, env=env, cwd=cwd
    )  # fmt: skip


# 1. Every subcommand's --help shows its options with their defaults.

_SWITCH = re.compile(r"^  (?:-\w, )?--[\w-]+(?:, --[\w-]+)?(?:\s{2,}|$)")


def _option_blocks(text: str) -> dict[str, str]:
    """Each option's help entry (its first line and the wrapped lines under it), by flag."""
    blocks: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        match = re.match(r"^  (?:-\w, )?(--[\w-]+)", line)
        if match:
            current = match.group(1)
            blocks[current] = line
        elif current is not None and line.startswith("    "):
            blocks[current] += "\n" + line
        else:
            current = None
    return blocks


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        ([*CLI, "run"], {"--n": "default: 1", "--fault-rate": "default: 0.0", "--max-turns": "default: 40"}),
        ([*CLI, "serve-tools"], {"--fault-rate": "default 0", "--max-batch": "default 8", "--log-level": "WARNING"}),
        ([*TOOLS], {"--transport": "default", "--max-queue": "default"}),
        ([*CLI, "serve-policy"], {"--max-model-len": "default: 8192", "--host": "default: 127.0.0.1"}),
        ([*CLI, "eval"], {"--concurrency": "default: 4", "--max-tokens": "default: 1024"}),
        ([*CLI, "eval", "compare"], {"--out": "default"}),
        ([*CLI, "collect"], {"--group-size": "default: 4", "--fault-rate": "default: 0.3"}),
        ([*CLI, "train"], {"--max-steps": "default", "--output-dir": "default"}),
    ],
    ids=["run", "serve-tools", "visioncreator-tools", "serve-policy", "eval", "eval-compare", "collect", "train"],
)
def test_help_shows_every_option_with_its_default(argv: list[str], expect: dict[str, str]) -> None:
    done = _run([*argv, "--help"])
    assert done.returncode == 0, done.stderr
    blocks = _option_blocks(done.stdout)
    assert set(expect) <= set(blocks), f"options missing from the help: {set(expect) - set(blocks)}"
    for flag, shown in expect.items():
        assert shown in " ".join(blocks[flag].split()), blocks[flag]
    for flag, block in blocks.items():
        if _SWITCH.match(block.splitlines()[0]) or "required" in block:
            continue  # a switch (off unless given) or a required option has no default to show
        assert "default" in block.lower() or "WARNING" in block, f"{flag} does not show its default:\n{block}"


# 2. Every argument is checked before anything starts: one line naming the option, exit status 2.


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["run", "", "--out", "{out}"], "argument prompt"),
        (["run", "   ", "--out", "{out}"], "argument prompt"),
        (["run", "a cat", "--n", "0", "--out", "{out}"], "argument --n: must be an integer from 1 to 16, got 0"),
        (["run", "a cat", "--n", "17", "--out", "{out}"], "argument --n"),
        (["run", "a cat", "--n", "two", "--out", "{out}"], "argument --n"),
        (
            ["run", "a cat", "--fault-rate", "2", "--out", "{out}"],
            "argument --fault-rate: must be a number from 0 to 1",
        ),
        (["run", "a cat", "--fault-rate", "nan", "--out", "{out}"], "argument --fault-rate"),
        (["run", "a cat", "--max-turns", "0", "--out", "{out}"], "argument --max-turns"),
        (["run", "a cat", "--max-tool-calls", "-1", "--out", "{out}"], "argument --max-tool-calls"),
        (["run", "a cat", "--policy-timeout", "0", "--out", "{out}"], "argument --policy-timeout"),
        (["run", "a cat", "--tool-latency", "601", "--out", "{out}"], "argument --tool-latency"),
        (["run", "a cat", "--out", "{file}"], "argument --out: {file} is a file, not a folder"),
        (["run", "a cat", "--policy", "{out}/nowhere", "--out", "{out}"], "argument --policy"),
        (["run", "a cat", "--image", "{out}/missing.png", "--out", "{out}"], "argument --image"),
        (["serve-tools", "--fault-rate", "2", "--store", "{out}"], "argument --fault-rate"),
        (["serve-tools", "--observe-ocr-rate", "-0.1", "--store", "{out}"], "argument --observe-ocr-rate"),
        (["serve-tools", "--max-batch", "0", "--store", "{out}"], "argument --max-batch"),
        (["serve-tools", "--port", "70000", "--store", "{out}"], "argument --port"),
        (["serve-policy", "{out}/no-model"], "argument model_dir"),
        (["serve-policy", "{dir}", "--port", "70000", "--log-file", "{out}/log"], "argument --port"),
        (["eval", "--out", "{out}", "--concurrency", "0"], "argument --concurrency"),
        (["eval", "--out", "{out}", "--max-turns", "0"], "argument --max-turns"),
        (["eval", "--out", "{out}", "--limit", "-1"], "argument --limit"),
        (["eval", "--out", "{file}"], "argument --out"),
        (["eval", "--out", "{out}", "--policy", "{out}/nowhere"], "argument --policy"),
        (["collect", "--out", "{out}/r.jsonl", "--group-size", "0"], "argument --group-size"),
        (["collect", "--out", "{out}/r.jsonl", "--fault-rate", "2"], "argument --fault-rate"),
        (["collect", "--out", "{out}/r.jsonl", "--expert", '{"nope": 1}'], "argument --expert"),
        (["collect", "--out", "{dir}"], "argument --out"),
        (["train", "sft", "--config", "{file}", "--max-steps", "0"], "argument --max-steps"),
    ],
)
def test_a_bad_argument_is_one_line_naming_it_and_nothing_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    out, existing_file, existing_dir = tmp_path / "out", tmp_path / "file", tmp_path / "dir"
    existing_file.write_text("not a folder")
    existing_dir.mkdir()
    names = {"{out}": str(out), "{file}": str(existing_file), "{dir}": str(existing_dir)}

    def fill(text: str) -> str:
        for key, value in names.items():
            text = text.replace(key, value)
        return text

    try:  # through the `visioncreator` command's main, in this process (a subprocess per case is slow)
        status = main([fill(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    shown = capsys.readouterr()
    err = shown.err.strip()
    assert status == 2, shown.err
    assert "\n" not in err, f"more than one line:\n{err}"
    assert fill(named) in err
    assert "Traceback" not in err
    assert "usage:" not in err
    assert shown.out == ""
    assert not out.exists(), "a folder was made before the arguments were checked"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


# 3. A missing extra is one line naming the pip install to run.


@pytest.mark.parametrize(
    ("argv", "missing", "named"),
    [
        (["run", "a cat", "--backend", "diffusers", "--out", "{out}"], "diffusers", "--backend"),
        (["run", "a cat", "--backend", "tiny", "--out", "{out}"], "torch", "--backend"),
        (["run", "a cat", "--policy", "{dir}", "--out", "{out}"], "transformers", "--policy"),
        (["serve-tools", "--backend", "diffusers", "--store", "{out}"], "diffusers", "--backend"),
        (["eval", "--tools", "tiny", "--out", "{out}"], "diffusers", "--tools"),
    ],
)
def test_a_missing_extra_names_the_pip_install(tmp_path: Path, argv: list[str], missing: str, named: str) -> None:
    out, model = tmp_path / "out", tmp_path / "model"
    model.mkdir()
    filled = [a.replace("{out}", str(out)).replace("{dir}", str(model)) for a in argv]
    done = _run([*CLI, *filled], missing=missing, timeout=60)
    err = done.stderr.strip()
    extra = "llm" if named == "--policy" else "diffusers"
    assert done.returncode == 2, done.stderr
    assert "\n" not in err, f"more than one line:\n{err}"
    assert f"argument {named}" in err
    assert f"(missing: {missing})" in err
    assert f"pip install 'visioncreator[{extra}]'" in err
    assert not out.exists()


# 4. No folder (or file) is left behind by a run that never started.


def test_a_run_that_never_started_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run([*CLI, "run", "a cat", "--tools-url", f"{UNREACHABLE}/mcp", "--out", str(out)])
    assert done.returncode == 1
    assert "cannot reach the tool server" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()

    # A folder that was there keeps what it held, and only that.
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    done = _run([*CLI, "run", "a cat", "--policy", f"{UNREACHABLE}/v1", "--out", str(out)])
    assert done.returncode == 1
    assert "cannot list the models" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_restart_that_never_started_keeps_the_checkpoint_it_moved_aside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run([*CLI, "run", "a cat", "--out", str(out), "--quiet"]).returncode == 0
    kept = {p.name for p in out.iterdir()}
    done = _run([*CLI, "run", "a cat", "--restart", "--tools-url", f"{UNREACHABLE}/mcp", "--out", str(out)])
    assert done.returncode == 1
    after = {p.name for p in out.iterdir()}
    moved = [name for name in after if name.startswith("checkpoints.sqlite.restarted-")]
    assert moved, after
    assert after - set(moved) == kept - {"checkpoints.sqlite"}


def test_errors_are_one_line_and_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from visioncreator.graph.cli import _stopped

    assert _stopped(ConnectionResetError("peer reset"), debug=False, started=False) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "ConnectionResetError: peer reset" in err
    assert "nothing was kept" in err
    assert "--debug" in err
    with pytest.raises(ConnectionResetError):
        _stopped(ConnectionResetError("peer reset"), debug=True)


def test_an_eval_that_never_started_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    done = _run([*CLI, "eval", "--tools", f"{UNREACHABLE}/mcp", "--out", str(out), "--limit", "1", "--quiet"])
    assert done.returncode == 2
    assert "cannot reach the tool server" in done.stderr
    assert not out.exists()


# 5. A resumed run says that it resumed and from where, and keeps the first run's time.


def _wall_s(out: Path) -> float:
    return float(json.loads((out / "trajectory.json").read_text())["timings"]["wall_s"])


def test_a_finished_run_run_again_says_so_and_keeps_its_time(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [*CLI, "run", "a red car", "--out", str(out), "--tool-latency", "0.2"]
    first = _run(args)
    assert first.returncode == 0, first.stderr
    thread = json.loads(first.stdout)["thread_id"]
    took = _wall_s(out)
    assert took >= 0.2
    again = _run(args)
    assert again.returncode == 0, again.stderr
    assert re.search(
        rf"resumed thread {thread} from checkpoint step \d+ \(\d+ turn\(s\) and \d+ tool call", again.stderr
    )
    assert "already finished" in again.stderr
    assert _wall_s(out) == took
    assert json.loads(again.stdout)["wall_s"] == took


def test_a_killed_run_resumed_says_from_where_and_adds_up_its_time(tmp_path: Path) -> None:
    out = tmp_path / "out"
    request = "Three images of the same brown dog: a brown dog next to a red car; a brown dog below a blue umbrella"
    args = [*CLI, "run", request, "--n", "2", "--out", str(out), "--tool-latency", "1.0"]
    first = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    assert first.stderr is not None
    deadline = time.monotonic() + 90
    try:
        for line in first.stderr:
            if re.search(r"\[call_\d+_\d+\] \w+ -> img_", line):
                break  # one image is done and checkpointed (1 s of simulated work at least)
            assert time.monotonic() < deadline, "no tool call finished"
        time.sleep(0.3)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        first.stderr.close()
    before = json.loads((out / "clock.json").read_text())["wall_s"]
    assert before >= 1.0

    second = _run(args)
    assert second.returncode == 0, second.stderr
    thread = json.loads(second.stdout)["thread_id"]
    assert re.search(
        rf"resumed thread {thread} from checkpoint step \d+ \(\d+ turn\(s\) and [1-9]\d* tool call", second.stderr
    )
    assert "next: " in second.stderr
    assert _wall_s(out) >= before + 1.0  # the first run's time plus the second's (one more image at least)


# 6. Long work shows progress: plain lines with rate and ETA when not on a terminal, a bar on one.


def test_eval_progress_is_plain_lines_with_rate_and_eta_off_a_terminal(tmp_path: Path) -> None:
    done = _run([*CLI, "eval", "--out", str(tmp_path / "e"), "--limit", "2", "--no-report"])
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"^eval: 2/2 task\(s\) \(100%\), [\d.]+ task/s, ETA 0:00, success \d/2, errors 0$", done.stderr, re.M
    )
    assert "\r" not in done.stderr


def test_collect_progress_is_plain_lines_with_rate_and_eta_off_a_terminal(tmp_path: Path) -> None:
    out = tmp_path / "c" / "records.jsonl"
    argv = ["collect", "--out", str(out), "--splits", "single", "--limit", "1", "--group-size", "2", "--workers", "1"]
    done = _run([*CLI, *argv])
    assert done.returncode == 0, done.stderr
    assert re.search(r"^collect: 2/2 traj\(s\) \(100%\), [\d.]+ traj/s, ETA 0:00$", done.stderr, re.M)


def _on_a_terminal(argv: list[str], *, missing: str = "", timeout: float = 120) -> str:
    """Run ``argv`` with stderr on a pseudo-terminal (100 columns); what it drew there."""
    env = dict(os.environ)
    if missing:
        env["PYTHONPATH"] = os.pathsep.join([str(MISSING_EXTRAS), env.get("PYTHONPATH", "")])
        env["VISIONCREATOR_TEST_MISSING"] = missing
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(argv, stderr=follower, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    os.close(follower)
    drawn = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 0, drawn.decode(errors="replace")
    return drawn.decode(errors="replace")


def test_eval_progress_is_a_bar_on_a_terminal(tmp_path: Path) -> None:
    drawn = _on_a_terminal([*CLI, "eval", "--out", str(tmp_path / "e"), "--limit", "2", "--no-report"])
    assert "\r" in drawn  # redrawn in place
    assert re.search(r"eval: 100%\|█+\| 2/2 \[\d\d:\d\d<00:00, +[\d.]+(s/task|task/s), success=2/2, errors=0\]", drawn)


def test_without_tqdm_the_bar_is_rich_when_rich_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("rich")
    drawn = _on_a_terminal([*CLI, "eval", "--out", str(tmp_path / "e"), "--limit", "1", "--no-report"], missing="tqdm")
    assert "\x1b[" in drawn  # rich draws with terminal control sequences
    assert re.search(r"eval .*1/1.*task/s", drawn)


def test_train_progress_lines_carry_rate_and_eta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl")
    from visioncreator.rl.train.cli import main
    from visioncreator.rl.train.config import PolicyModel
    from visioncreator.rl.train.models import model_dir_for

    tiny = model_dir_for(PolicyModel(model="tiny"), tmp_path / "models")
    config = tmp_path / "train.toml"
    config.write_text(
        f'output_dir = "{tmp_path / "run"}"\n[policy]\nmodel = "{tiny}"\nmax_new_tokens = 24\ntorch_threads = 1\n'
        '[[stages]]\nkind = "sft"\nname = "sft"\nmax_steps = 2\nbatch_size = 1\nlearning_rate = 1e-3\n'
        'max_length = 4096\ntasks = { splits = ["single"], limit = 2, fault_rate = 0.0 }\n'
    )
    assert main(["sft", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"sft step 2/2 loss=\S+ \([\d.]+ step/s, ETA 0:00\)$", err, re.M), err
