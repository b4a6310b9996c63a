"""The ``visioncreator`` command end to end: real processes, a real stdio or HTTP tool server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

MULTI = (
    "Three images of the same brown dog: a brown dog next to a red car; "
    "a brown dog below a blue umbrella; a brown dog next to a bench"
)
CLI = [sys.executable, "-m", "visioncreator.graph"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_run_writes_images_trajectory_and_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli("run", MULTI, "--n", "3", "--out", str(out), "--fault-rate", "0.3", "--seed", "1")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["termination"] == "answered"
    assert len(summary["images"]) == 3
    for path in summary["images"]:
        with Image.open(path) as image:  # noqa: TID251 - our own output, in a test
            assert image.size == (512, 512)
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert {t["node"] for t in trajectory["turns"]} >= {"plan", "act", "reflect"}
    assert all(t["segments"] for t in trajectory["turns"])
    made = [c for c in trajectory["tool_calls"] if c["by"] == "policy" and c["ok"]]
    assert made
    assert all(c["handle"] in trajectory["truths"] for c in made)
    assert len(trajectory["answer"]) == 3
    report = (out / "report.html").read_text()
    for handle in trajectory["answer"]:
        assert f'src="images/{handle}.png"' in report
        assert (out / "images" / f"{handle}.png").exists()
    assert "&lt;plan&gt;" in report
    assert "&lt;reflect&gt;" in report
    # Progress went to stderr, one line per turn and tool call.
    assert "[plan] turn 0" in done.stderr
    assert "text_to_image ->" in done.stderr


def test_kill_mid_task_then_resume_runs_no_finished_call_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    log = tmp_path / "calls.jsonl"
    args = ["run", MULTI, "--n", "3", "--out", str(out), "--tool-latency", "1.5", "--tool-log", str(log)]
    first = subprocess.Popen(
        [*CLI, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True
    )
    finished_first: list[str] = []
    deadline = time.monotonic() + 90
    assert first.stderr is not None
    try:
        for line in first.stderr:
            match = re.search(r"\[(call_\d+_\d+)\] \w+ -> img_", line)
            if match:
                finished_first.append(match.group(1))
                break  # the first panel is done; the other two are now running
            assert time.monotonic() < deadline, "the first tool call never finished"
        time.sleep(0.3)  # let the graph checkpoint the finished call and start the next step
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        first.stderr.close()
    assert finished_first == ["call_1_0"]
    logged_before = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(logged_before) >= 1

    second = run_cli(*args, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "resumed thread" in second.stderr
    rerun = re.findall(r"\[(call_\d+_\d+)\] \w+ -> img_", second.stderr)
    assert rerun, "the resumed run made no tool call"
    assert not set(rerun) & set(finished_first)
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert len(trajectory["answer"]) == 3
    ids = [c["id"] for c in trajectory["tool_calls"]]
    assert len(ids) == len(set(ids))
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    first_call = next(c for c in trajectory["tool_calls"] if c["id"] == "call_1_0")
    assert sum(entry["handle"] == first_call["handle"] for entry in logged) == 1


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [*CLI, "serve-tools", "--transport", "http", "--port", "0", "--store", str(tmp_path / "store")],
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
        assert url, "the HTTP tool server did not start"
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stderr.close()


def test_run_against_a_tool_server_over_http(tmp_path: Path, http_server: str) -> None:
    out = tmp_path / "out"
    done = run_cli("run", "a green bus above a yellow bench", "--out", str(out), "--tools-url", http_server)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["termination"] == "answered"
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert trajectory["truths"], "ground truth was read back over the truth:// resource"


def test_img2img_from_a_file(tmp_path: Path) -> None:
    first = run_cli("run", "a red car next to a green bench", "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    source = json.loads(first.stdout)["images"][0]
    second = run_cli("run", "make the car blue", "--image", source, "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    trajectory = json.loads((tmp_path / "b" / "trajectory.json").read_text())
    assert trajectory["task"]["split"] == "img2img"
    (answer,) = trajectory["answer"]
    cars = [o for o in trajectory["truths"][answer]["scene"]["objects"] if o["kind"] == "car"]
    assert cars
    assert {c["color"] for c in cars} == {"blue"}


def test_bad_arguments_give_a_clear_error(tmp_path: Path) -> None:
    done = run_cli("run", "a cat", "--n", "0", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "argument --n: must be an integer from 1 to 16, got 0" in done.stderr
    missing = run_cli("run", "a cat", "--image", str(tmp_path / "nope.png"), "--out", str(tmp_path))
    assert missing.returncode != 0
    assert "nope.png" in missing.stderr
    assert "Traceback" not in missing.stderr
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    refused = run_cli("run", "make it red", "--image", str(not_an_image), "--out", str(tmp_path / "o"))
    assert refused.returncode == 1
    assert "refused the input image" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.diffusers
def test_run_with_real_diffusers_pipelines(tmp_path: Path) -> None:
    """The same agent over the tiny back end: real diffusers pipelines behind the MCP tools."""
    pytest.importorskip("diffusers")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = tmp_path / "out"
    done = subprocess.run(
        [*CLI, "run", "a red car next to a blue bench", "--backend", "tiny", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert trajectory["termination"] == "answered"
    assert trajectory["truths"] == {}  # real images carry no synthetic ground truth
    looks = [c for c in trajectory["tool_calls"] if c["name"] == "inspect_image"]
    assert looks
    assert looks[0]["result"]["known"] is False
    assert looks[0]["result"]["analysis"]["colors"]
    with Image.open(out / "image_1.png") as image:  # noqa: TID251 - our own output, in a test
        assert image.size == (512, 512)
