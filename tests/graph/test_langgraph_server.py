"""LangGraph Server runs the agent from ``langgraph.json``: ``langgraph dev`` on loopback, driven over its HTTP API.

The server is the real one (``langgraph-cli[inmem]``), in its own virtual environment
(``.venv-lgserver``, made by ``.ci/lgserver-setup.sh``: its packages cannot share the project's
environment); without it this test fails, it does not skip. The server spawns the bundled
synthetic tool server once, in the app's lifespan, and every graph access after that reuses it.
Nothing reaches the internet: no browser, no reload, no tracing, no version check, no analytics.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from visioncreator.graph import AgentHost, HostSettings

REPO = Path(__file__).resolve().parents[2]
LANGGRAPH = REPO / ".venv-lgserver" / "bin" / "langgraph"
SETUP_HINT = "run .ci/lgserver-setup.sh (it makes .venv-lgserver with langgraph-cli[inmem] and this project)"
START_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 60.0
GRAPH = "visioncreator"
QUIET = {
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGSMITH_API_KEY": "",
    "LANGCHAIN_API_KEY": "",
}


@dataclass
class Server:
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    if not LANGGRAPH.exists():
        pytest.fail(f"{LANGGRAPH} is missing: {SETUP_HINT}", pytrace=False)
    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, **QUIET, "VISIONCREATOR_STORE": str(tmp_path / "store"), "VISIONCREATOR_FAULT_RATE": "0.3"}
    command = [str(LANGGRAPH), "dev", "--config", str(REPO / "langgraph.json"), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-browser", "--no-reload", "--server-log-level", "INFO"]
    with log.open("wb") as out:
        # Its own process group: the server, its workers and the tool server it spawned end together.
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield Server(url=url, log=log)
    finally:
        _stop(process)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"langgraph dev exited with {process.returncode}:\n{log.read_text()[-4000:]}", pytrace=False)
        try:
            if httpx.get(f"{url}/ok", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"langgraph dev did not answer in {START_TIMEOUT_S:g} s:\n{log.read_text()[-4000:]}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue


def _timed(http: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    response = http.request(method, path, **kwargs)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text[:2000]}"
    return response.json(), elapsed


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_langgraph_dev_runs_a_task_and_serves_its_state_and_history(server: Server) -> None:
    task = {"request": "two red apples to the left of a blue bowl", "n_images": 1}
    with httpx.Client(base_url=server.url, timeout=RUN_TIMEOUT_S) as http:
        # What Studio reads first: the graph and its input/output JSON schemas (its input form).
        schemas, first_access = _timed(http, "GET", f"/assistants/{_assistant(http)}/schemas")
        assert set(schemas["input_schema"]["properties"]) >= {"task", "seed"}
        assert set(schemas["output_schema"]["properties"]) >= {"answer", "termination"}
        thread = http.post("/threads", json={}).json()["thread_id"]
        run = {"assistant_id": GRAPH, "input": {"task": task, "seed": 0}}
        final, run_s = _timed(http, "POST", f"/threads/{thread}/runs/wait", json=run)
        assert final["termination"] == "answered", json.dumps(final)[:2000]
        assert len(final["answer"]) == 1
        assert final["answer"][0].startswith("img_")
        later = []
        for _ in range(5):
            state, state_s = _timed(http, "GET", f"/threads/{thread}/state")
            history, history_s = _timed(http, "POST", f"/threads/{thread}/history", json={"limit": 100})
            later += [state_s, history_s]
    assert state["values"]["answer"] == final["answer"]
    assert state["values"]["turns"], "the thread's state holds the whole run"
    assert not state["next"]
    assert len(history) > 3
    assert history[0]["values"]["answer"] == final["answer"]
    assert any(h["next"] == ["tools"] for h in history), "a tool step is among the checkpoints"
    later.sort()
    print(
        f"\nlanggraph dev: first graph access (schemas) {first_access * 1e3:.1f} ms, run {run_s:.2f} s, "
        f"later state/history reads: median {later[len(later) // 2] * 1e3:.1f} ms, max {later[-1] * 1e3:.1f} ms"
    )
    log = server.log.read_text(errors="replace")
    assert "Slow graph load" not in log, "a graph access took over 100 ms"
    assert log.count("visioncreator: tool session opened") == 1, log[-4000:]


def _assistant(http: httpx.Client) -> str:
    found = http.post("/assistants/search", json={"graph_id": GRAPH, "limit": 1})
    assert found.status_code == 200, found.text
    return str(found.json()[0]["assistant_id"])


@pytest.mark.timeout(120)
async def test_the_host_opens_one_tool_session_for_every_access(tmp_path: Path) -> None:
    host = AgentHost(HostSettings(store=tmp_path / "store"))
    first, second = await asyncio.gather(host.agent(), host.agent())  # two first accesses at once
    assert first is second
    assert host.opens == 1
    assert await host.agent() is first
    assert host.opens == 1
    await host.close()
    reopened = await host.agent()  # a closed host opens again on the next access
    assert reopened is not first
    assert host.opens == 2
    await host.close()


def test_the_host_settings_come_from_the_environment() -> None:
    assert HostSettings.from_env({}) == HostSettings()
    given = HostSettings.from_env(
        {
            "VISIONCREATOR_FAULT_RATE": "0.5",
            "VISIONCREATOR_TOOLS_URL": "http://127.0.0.1:9/mcp",
            "VISIONCREATOR_TOOLS_TOKEN": "t",
        }
    )
    assert given.fault_rate == 0.5
    assert given.spec().url == "http://127.0.0.1:9/mcp"
    assert given.spec().token == "t"
    spawned = HostSettings.from_env({"VISIONCREATOR_STORE": "s", "VISIONCREATOR_FAULT_RATE": "0.25"}).spec()
    assert spawned.url is None
    assert spawned.args[spawned.args.index("--store") + 1] == "s"
    assert spawned.args[spawned.args.index("--fault-rate") + 1] == "0.25"
    with pytest.raises(ValueError, match="VISIONCREATOR_FAULT_RATE"):
        HostSettings.from_env({"VISIONCREATOR_FAULT_RATE": "2"})
