"""The ``trusted`` switch: our own server's results skip the SDK's output-schema check, others do not.

The fault injected: the SDK's result validation fails on every call. A trusted client never
runs it (its calls succeed); an untrusted one does (its calls raise).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.types import CallToolResult

from visioncreator.graph import ToolClient, ToolServerSpec
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

CALL_BOUND_S = 60.0


@pytest.fixture
def validation_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self: ClientSession, name: str, result: CallToolResult) -> None:
        raise RuntimeError(f"validated {name}")

    # mcp 2.x names the check validate_tool_result, mcp 1.x _validate_tool_result.
    check = "validate_tool_result" if hasattr(ClientSession, "validate_tool_result") else "_validate_tool_result"
    monkeypatch.setattr(ClientSession, check, refuse)


def test_only_the_bundled_server_is_trusted_by_default(tmp_path: Path) -> None:
    assert ToolServerSpec.synthetic(store=str(tmp_path)).trusted
    assert not ToolServerSpec().trusted
    assert not ToolServerSpec(url="http://127.0.0.1:1/mcp").trusted


async def _make_and_inspect(tools: ToolClient) -> None:
    made = await tools.call("text_to_image", {"prompt": "two red apples", "width": 128, "height": 96, "seed": 4})
    assert made.ok, made.error
    assert made.structured is not None
    assert made.structured["width"] == 128
    seen = await tools.call("inspect_image", {"image": made.structured["handle"], "questions": []})
    assert seen.ok, seen.error
    assert seen.structured is not None
    assert seen.structured["handle"] == made.structured["handle"]
    # A tool error is still an outcome, not an exception.
    missing = await tools.call("inspect_image", {"image": "img_" + "0" * 24, "questions": []})
    assert not missing.ok
    assert missing.error is not None
    assert "unknown image handle" in missing.error


async def test_a_trusted_stdio_client_skips_validation_and_an_untrusted_one_runs_it(
    tmp_path: Path, validation_fails: None
) -> None:
    spec = ToolServerSpec.synthetic(store=str(tmp_path / "store"))
    with anyio.fail_after(CALL_BOUND_S):
        async with ToolClient(spec=spec) as tools:
            await _make_and_inspect(tools)
        async with ToolClient(spec=dataclasses.replace(spec, trusted=False)) as tools:
            with pytest.raises(RuntimeError, match="validated text_to_image"):
                await tools.call("text_to_image", {"prompt": "a cat", "seed": 1})


async def test_an_in_process_server_is_trusted_unless_told_otherwise(tmp_path: Path, validation_fails: None) -> None:
    settings = ServerSettings(store_root=tmp_path / "store")
    with anyio.fail_after(CALL_BOUND_S):
        async with ToolClient(server=build_server(settings)) as tools:
            await _make_and_inspect(tools)
        async with ToolClient(server=build_server(settings), trusted=False) as tools:
            with pytest.raises(RuntimeError, match="validated text_to_image"):
                await tools.call("text_to_image", {"prompt": "a cat", "seed": 1})
