"""The readiness probe and the preload: ``GET /ready`` behind the same guards as MCP, and no model load in a call."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest
from tests.security._tool_server import Server, tool_server

from visioncreator.tool_servers import ServerSettings, build_server, serve_http
from visioncreator.tool_servers.readiness import Readiness

WAIT_S = 60.0


def get(url: str, *, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        with exc:  # closes the connection
            body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:  # the guards answer in plain text
            return exc.code, {}


def ready_url(server: Server) -> str:
    return f"http://{server.authority}/ready"


def test_ready_answers_200_with_the_back_end(tmp_path: Path) -> None:
    with tool_server(tmp_path) as server:
        status, answer = get(ready_url(server))
        assert status == 200
        assert answer == {"ready": True, "backend": "synthetic", "preload": False}
        assert get(ready_url(server), method="POST")[0] == 405


def test_ready_passes_the_host_and_origin_checks(tmp_path: Path) -> None:
    with tool_server(tmp_path) as server:
        assert get(ready_url(server), headers={"Host": "evil.example"})[0] == 421
        origin = {"Origin": "http://evil.example"}
        assert get(ready_url(server), headers=origin)[0] == 403


def test_ready_needs_the_token_where_the_server_has_one(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-for-ready\n")
    with tool_server(tmp_path, "--token-file", str(token_file)) as server:
        assert get(ready_url(server))[0] == 401
        status, answer = get(ready_url(server), headers={"Authorization": "Bearer s3cret-token-for-ready"})
        assert status == 200
        assert answer["ready"] is True


class GatedBackend:
    """A back end whose model load waits for the test: the fault injected is a slow load."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.loaded: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def models_in_use(self) -> list[str]:
        return ["slow-model"]

    def load_model(self, name: str) -> None:
        assert self.release.wait(WAIT_S)
        self.loaded.append(name)

    def loaded_models(self) -> list[str]:
        return list(self.loaded)


async def test_ready_is_503_while_loading_and_listening_is_announced_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ServerSettings(store_root=tmp_path / "store", port=0)
    from visioncreator.tool_servers.tools import default_backend

    backend = GatedBackend(default_backend(settings))
    readiness = Readiness(backend, backend_name="slow", preload=True)
    server = build_server(settings, backend=backend)  # type: ignore[arg-type]
    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: serve_http(server, settings, readiness=readiness))
            url = None
            while url is None:
                await anyio.sleep(0.01)
                for line in capsys.readouterr().err.splitlines():
                    if "loading models;" in line:
                        url = line.split("; ", 1)[1].split()[0]
            probe = url.rsplit("/", 1)[0] + "/ready"
            status, answer = await anyio.to_thread.run_sync(get, probe)
            assert status == 503
            assert answer == {
                "ready": False, "backend": "slow", "preload": True, "models": ["slow-model"], "loaded": [],
                "loading": "slow-model",
            }  # fmt: skip
            assert "listening on" not in capsys.readouterr().err
            backend.release.set()
            while status != 200:
                await anyio.sleep(0.01)
                status, answer = await anyio.to_thread.run_sync(get, probe)
            assert answer["loaded"] == ["slow-model"]
            assert answer["ready"] is True
            assert "load_s" in answer
            deadline = time.monotonic() + WAIT_S
            err = ""
            while "listening on" not in err:
                assert time.monotonic() < deadline
                await anyio.sleep(0.01)
                err += capsys.readouterr().err
            group.cancel_scope.cancel()
