"""A lost tool server is an outage, never an answer: kill it at random points and check every ending.

Real processes throughout: the ``visioncreator`` CLI, the tool server it spawns over stdio (killed
with SIGKILL mid-task), and an HTTP tool server that dies and comes back on the same port.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.security._tool_server import RestartableServer

MULTI = (
    "Three images of the same brown dog: a brown dog next to a red car; "
    "a brown dog below a blue umbrella; a brown dog next to a bench"
)
CLI = [sys.executable, "-m", "visioncreator.graph"]
RUN = ["run", MULTI, "--n", "3", "--fault-rate", "0.3", "--seed", "3", "--tool-latency", "0.2"]
TRIALS = 20


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc: no extra dependency)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces, so split after it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@dataclass
class Ending:
    returncode: int
    stdout: str
    stderr: str
    kills: int


def _run_and_kill(out: Path, log: Path, after_calls: int, jitter_s: float) -> Ending:
    """Run the CLI; after ``after_calls`` finished tool calls (+ jitter), SIGKILL its tool server."""
    proc = subprocess.Popen(
        [*CLI, *RUN, "--out", str(out), "--tool-log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    assert proc.stdout is not None
    lines: list[str] = []
    kills = 0
    deadline = time.monotonic() + 120
    try:
        seen = 0
        for line in proc.stderr:
            lines.append(line)
            if " -> " in line:
                seen += 1
            if kills == 0 and seen >= after_calls:
                time.sleep(jitter_s)
                for child in _children(proc.pid):
                    os.kill(child, signal.SIGKILL)
                    kills += 1
            assert time.monotonic() < deadline, "the run did not end"
        stdout = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stderr.close()
        proc.stdout.close()
    return Ending(proc.returncode, stdout, "".join(lines), kills)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The same task run without a fault: its answer and how many images it made."""
    root = tmp_path_factory.mktemp("reference")
    log = root / "calls.jsonl"
    done = subprocess.run(
        [*CLI, *RUN, "--out", str(root / "out"), "--tool-log", str(log)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    trajectory = json.loads((root / "out" / "trajectory.json").read_text())
    calls = sum(" -> " in line for line in done.stderr.splitlines())
    return {"answer": trajectory["answer"], "made": len(log.read_text().splitlines()), "calls": calls, **summary}


def test_killing_the_spawned_tool_server_at_random_points_never_gives_a_short_answer(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    rng = random.Random(12)
    calls = int(reference["calls"])  # type: ignore[call-overload]
    plans = [(i, rng.randrange(0, calls), rng.uniform(0.0, 0.4)) for i in range(TRIALS)]

    def trial(plan: tuple[int, int, float]) -> tuple[int, Ending, Ending | None]:
        i, after, jitter = plan
        out, log = tmp_path / f"t{i}", tmp_path / f"t{i}.jsonl"
        first = _run_and_kill(out, log, after, jitter)
        again = None
        if first.returncode != 0:
            done = subprocess.run([*CLI, *RUN, "--out", str(out), "--tool-log", str(log)],
                                  capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
            again = Ending(done.returncode, done.stdout, done.stderr, 0)
        return i, first, again

    with ThreadPoolExecutor(max_workers=4) as pool:
        endings = list(pool.map(trial, plans))

    killed = 0
    for i, first, again in endings:
        killed += first.kills > 0
        if first.returncode == 0:
            # Finished in one go: the loss was seen, the server restarted, the task resumed.
            summary = json.loads(first.stdout)
        else:
            assert "tool server" in first.stderr, first.stderr
            assert "Traceback" not in first.stderr, first.stderr
            assert again is not None
            assert again.returncode == 0, again.stderr
            summary = json.loads(again.stdout)
        trajectory = json.loads((tmp_path / f"t{i}" / "trajectory.json").read_text())
        # Never a short answer: the very answer of the undisturbed run (same seeds, same images).
        assert summary["termination"] == "answered", (i, first.stderr)
        assert trajectory["answer"] == reference["answer"], (i, first.stderr)
        assert not any("Connection closed" in (c.get("error") or "") for c in trajectory["tool_calls"]), i
        # Only what was in flight at the kill is made again (at most the 3 panels of one batch).
        made = len((tmp_path / f"t{i}.jsonl").read_text().splitlines())
        assert made <= int(reference["made"]) + 3, (i, made)  # type: ignore[call-overload]
    assert killed >= TRIALS - 2, "the kills did not land while the runs were going"


SERVER_ARGS = ("--latency", "0.3", "--fault-rate", "0.3")


def test_an_http_tool_server_that_stays_down_is_an_error_and_the_rerun_resumes(
    tmp_path: Path, restartable_server: RestartableServer
) -> None:
    server = restartable_server
    server.start(*SERVER_ARGS)
    out = tmp_path / "out"
    args = ["run", MULTI, "--n", "3", "--seed", "3", "--out", str(out), "--tools-url", server.url]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    finished = []
    for line in proc.stderr:
        if " -> img_" in line:
            finished.append(line)
            break
    server.kill()
    stderr = "".join(finished) + proc.stderr.read()
    proc.wait(timeout=120)
    proc.stderr.close()
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.returncode != 0
    assert "tool server" in stderr, stderr
    assert "lost" in stderr, stderr
    assert "Traceback" not in stderr
    assert not (out / "trajectory.json").exists(), "an outage must not end as a written answer"

    server.start(*SERVER_ARGS)  # the same port and store
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "resumed thread" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["termination"] == "answered"
    assert len(summary["images"]) == 3
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert not any(not c["ok"] and "error response" in (c.get("error") or "") for c in trajectory["tool_calls"])


class _StormProxy:
    """A reverse proxy in front of a real tool server that can answer every request with a 502."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        proxy = self
        self.storm = False
        self.stormed = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                if proxy.storm:
                    proxy.stormed += 1
                    self.send_error(502, "bad gateway (storm)")
                    return
                if self.command == "GET":  # no listen stream through this proxy
                    self.send_error(405)
                    return
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                conn.request(self.command, target.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_POST = do_GET = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{target.path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_a_storm_of_5xx_answers_is_an_outage_and_the_task_resumes_after_it(
    tmp_path: Path, restartable_server: RestartableServer
) -> None:
    from visioncreator.graph import AgentConfig, TaskRunner, ToolClient, ToolServerLost, ToolServerSpec, expert_policy
    from visioncreator.graph.runner import open_checkpointer
    from visioncreator.policy import ExpertConfig, Task

    restartable_server.start(*SERVER_ARGS)
    proxy = _StormProxy(restartable_server.url)
    task = Task(request=MULTI, n_images=3, split="multi")
    spec = ToolServerSpec(url=proxy.url, outage_backoff_s=0.05, reconnects=1)
    events: list[dict[str, object]] = []

    def on_event(event: dict[str, object]) -> None:
        events.append(event)
        if event.get("event") == "tool_end" and event.get("ok"):
            proxy.storm = True  # from the first finished image on, every answer is a 502

    try:
        async with ToolClient(spec=spec) as tools, open_checkpointer(tmp_path / "c.sqlite") as saver:
            runner = TaskRunner(policy=expert_policy(ExpertConfig()), tools=tools, config=AgentConfig(),
                                checkpointer=saver)  # fmt: skip
            with pytest.raises(ToolServerLost, match=r"error response|502"):
                await runner.run(task, seed=3, on_event=on_event)
            assert proxy.stormed >= spec.outage_retries + 1
            assert any(e.get("event") == "tool_server_lost" for e in events)
            state = await runner.agent.aget_state({"configurable": {"thread_id": _thread(task)}})
            assert state.next, "the outage must leave the task unfinished in its checkpoint"
            assert not state.values.get("answer")

            proxy.storm = False
            events.clear()
            with pytest.raises(ToolServerLost):  # the lost session stays lost until reconnected
                await tools.call("inspect_image", {"image": "img_0"})
            await tools.reconnect(tools.generation)
            result = await runner.run(task, seed=3, on_event=events.append)
    finally:
        proxy.close()
    assert result.resumed
    assert result.trajectory.termination == "answered"
    assert len(result.trajectory.answer) == 3
    assert all("error response" not in (c.error or "") for c in result.trajectory.tool_calls)


def _thread(task: object) -> str:
    from visioncreator.graph import thread_id_for
    from visioncreator.policy import Task

    assert isinstance(task, Task)
    return thread_id_for(task, 3)
