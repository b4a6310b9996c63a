"""The preload of the tiny back end: every model loads before the server answers, none inside a call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.security._tool_server import tool_server
from tests.tool_servers.test_readiness import WAIT_S, get, ready_url

pytestmark = pytest.mark.diffusers


def _tiny_env(tiny_cache: Path, tmp_path: Path) -> dict[str, str]:
    """An environment whose default tiny cache is the session's (built once by the fixture)."""
    xdg = tmp_path / "xdg"
    (xdg / "visioncreator").mkdir(parents=True)
    (xdg / "visioncreator" / "tiny").symlink_to(tiny_cache)
    return {**os.environ, "XDG_CACHE_HOME": str(xdg), "PYTHONUNBUFFERED": "1"}


def _stdio_session(tmp_path: Path, env: dict[str, str], *flags: str) -> tuple[str, dict[str, Any]]:
    """Spawn the stdio server, initialize, call text_to_image once; its stderr and the call's result."""
    command = [sys.executable, "-m", "visioncreator.tool_servers", "--store", str(tmp_path / "store"), *flags]
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "text_to_image", "arguments": {
            "prompt": "a red circle", "width": 64, "height": 64, "seed": 3}}},
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        results: dict[int, dict[str, Any]] = {}
        try:
            process.stdin.write(json.dumps(messages[0]) + "\n")
            process.stdin.flush()
            for line in process.stdout:
                message = json.loads(line)
                results[message.get("id", 0)] = message
                if message.get("id") == 1:
                    for later in messages[1:]:
                        process.stdin.write(json.dumps(later) + "\n")
                    process.stdin.flush()
                if message.get("id") == 2:
                    break
        finally:
            process.stdin.close()  # the server exits at the end of its input
            process.wait(timeout=WAIT_S)
        err = process.stderr.read()  # a few lines: they fit the pipe while the server runs
    return err, results[2]


@pytest.mark.parametrize("preload", [True, False])
def test_stdio_tiny_server_loads_every_model_before_it_answers(preload: bool, tiny_cache: Path, tmp_path: Path) -> None:
    flag = "--preload" if preload else "--no-preload"
    err, result = _stdio_session(tmp_path, _tiny_env(tiny_cache, tmp_path), "--backend", "tiny", flag)
    assert result["result"]["isError"] is False, result
    loads = [line for line in err.splitlines() if "loaded model" in line]
    if preload:
        assert [line.split("loaded model ")[1].split()[0] for line in loads] == [
            "tiny-text", "tiny-edit", "tiny-references"
        ]  # fmt: skip
        assert "loading model tiny-text (1/3)" in err
    else:
        assert loads == []


def test_http_tiny_server_is_ready_with_every_model_when_it_announces_listening(
    tiny_cache: Path, tmp_path: Path
) -> None:
    env = _tiny_env(tiny_cache, tmp_path)
    with tool_server(tmp_path, "--backend", "tiny", env=env, startup_s=WAIT_S * 3) as server:
        status, answer = get(ready_url(server))
        assert status == 200
        assert answer["preload"] is True
        assert answer["models"] == ["tiny-text", "tiny-edit", "tiny-references"]
        assert sorted(answer["loaded"]) == sorted(answer["models"])
        assert "loading models;" in server.stderr()
