"""Where the HTTP server's bearer token comes from, and how it is checked: real server processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from tests.security._tool_server import Server, text_to_image_over_mcp, tool_server

TOKEN = "token-from-a-safe-place-0123456789"
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
WARNING = "every user of this machine can read it"


async def _status(server: Server, authorization: str | None) -> int:
    headers = {"Accept": "application/json, text/event-stream"}
    if authorization is not None:
        headers["Authorization"] = authorization
    with anyio.fail_after(15):
        async with httpx2.AsyncClient(timeout=10) as http:
            return (await http.post(server.url, json=PING, headers=headers)).status_code


async def _client_works(server: Server, token: str) -> None:
    result = await text_to_image_over_mcp(server, {"Authorization": f"Bearer {token}"})
    assert not result.is_error, result.content


async def test_the_token_comes_from_the_environment(tmp_path: Path) -> None:
    with tool_server(tmp_path, env={"VISIONCREATOR_TOKEN": TOKEN}) as server:
        assert await _status(server, None) == 401
        assert await _status(server, "Bearer not-the-token-0123456789") == 401
        await _client_works(server, TOKEN)
        assert WARNING not in server.stderr()


async def test_the_token_comes_from_a_file_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    # The file wins over the environment: it was named on the command line.
    env = {"VISIONCREATOR_TOKEN": "environment-token-0123456789"}
    with tool_server(tmp_path, "--token-file", str(token_file), env=env) as server:
        assert await _status(server, "Bearer environment-token-0123456789") == 401
        await _client_works(server, TOKEN)
        assert WARNING not in server.stderr()


async def test_a_token_on_the_command_line_works_with_a_warning(tmp_path: Path) -> None:
    with tool_server(tmp_path, "--token", TOKEN) as server:
        assert await _status(server, None) == 401
        await _client_works(server, TOKEN)
        stderr = server.stderr()
    assert "warning: --token" in stderr
    assert WARNING in stderr
    assert TOKEN not in stderr


async def test_the_scheme_is_case_insensitive_and_the_token_is_not(tmp_path: Path) -> None:
    with tool_server(tmp_path, env={"VISIONCREATOR_TOKEN": TOKEN}) as server:
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"]:
            # Initialised or not, an authorised request reaches the MCP app (400: no session yet).
            assert await _status(server, f"{scheme} {TOKEN}") == 400, scheme
            assert await _status(server, f"{scheme}  {TOKEN}") == 400, scheme
            assert await _status(server, f"{scheme} {TOKEN.upper()}") == 401, scheme
        for wrong in [f"Basic {TOKEN}", TOKEN, f"Bearer{TOKEN}", f"Bearer {TOKEN}x", "Bearer"]:
            assert await _status(server, wrong) == 401, wrong


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token", TOKEN, "--token-file", "{tmp}/token"], "not both"),
        (["--token-file", "{tmp}/empty"], "is empty"),
        (["--token-file", "{tmp}/missing"], "cannot read the token file"),
    ],
)
def test_bad_token_sources_stop_the_server_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "empty").write_text(" \n")
    command = [sys.executable, "-m", "visioncreator.tool_servers", "--transport", "http", "--port", "0"]
    command += ["--store", str(tmp_path / "store"), *(arg.format(tmp=tmp_path) for arg in args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert TOKEN not in done.stderr
