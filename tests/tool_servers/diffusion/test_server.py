"""The tiny diffusers back end behind a real MCP server, driven through the public client in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent
from tests.tool_servers.diffusion.conftest import eventually

from visioncreator.tool_servers.diffusion import DiffusersBackend, DiffusionSettings, make_backend
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

pytestmark = pytest.mark.diffusers


def _backend(tiny_cache: Path) -> DiffusersBackend:
    backend = make_backend("tiny", DiffusionSettings(cache_dir=tiny_cache, max_steps=1000, batch_wait_ms=50))
    assert isinstance(backend, DiffusersBackend)
    return backend


async def _call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    with anyio.fail_after(60):
        return await client.call_tool(tool, arguments)


async def _ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await _call(client, tool, **arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


def _text(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_the_three_image_tools_make_the_asked_sizes_and_seeds_decide_handles(
    tiny_cache: Path, tmp_path: Path
) -> None:
    server = build_server(ServerSettings(store_root=tmp_path / "store"), backend=_backend(tiny_cache))
    async with Client(server) as client:
        first = await _ok(client, "text_to_image", prompt="a red fox", width=128, height=96, seed=11, steps=2)
        assert (first["width"], first["height"], first["seed"]) == (128, 96, 11)
        again = await _ok(client, "text_to_image", prompt="a red fox", width=128, height=96, seed=11, steps=2)
        other = await _ok(client, "text_to_image", prompt="a red fox", width=128, height=96, seed=12, steps=2)
        assert again["handle"] == first["handle"]
        assert other["handle"] != first["handle"]

        edited = await _ok(client, "edit_image", image=first["handle"], instruction="make it blue", seed=1)
        assert (edited["width"], edited["height"]) == (128, 96)
        assert edited["handle"] != first["handle"]

        made = await _ok(
            client,
            "reference_to_image",
            prompt="the same fox at night",
            references=[first["handle"], other["handle"]],
            width=64,
            height=128,
            seed=2,
        )
        assert (made["width"], made["height"]) == (64, 128)

        looked = await _ok(client, "inspect_image", image=made["handle"])
        assert (looked["width"], looked["height"]) == (64, 128)


async def test_a_limit_of_the_model_is_a_tool_error_naming_it(tiny_cache: Path, tmp_path: Path) -> None:
    server = build_server(ServerSettings(store_root=tmp_path / "store"), backend=_backend(tiny_cache))
    async with Client(server) as client:
        result = await _call(client, "text_to_image", prompt="a fox", width=1024, height=256, seed=1)
        assert result.is_error
        assert "width 1024 exceeds max_width 768 of model tiny-text" in _text(result)
        result = await _call(client, "text_to_image", prompt="a fox", width=120, height=256, seed=1)
        assert result.is_error
        assert "not a multiple of 16" in _text(result)


async def test_concurrent_calls_through_the_server_are_batched(tiny_cache: Path, tmp_path: Path) -> None:
    backend = _backend(tiny_cache)
    server = build_server(ServerSettings(store_root=tmp_path / "store"), backend=backend)
    async with Client(server) as client:
        results = await asyncio.gather(
            *(_ok(client, "text_to_image", prompt="a fox", width=64, height=64, seed=s, steps=2) for s in range(4))
        )
    assert len({r["handle"] for r in results}) == 4
    assert sum(backend.stats.batch_sizes) == 4
    assert max(backend.stats.batch_sizes) >= 2


async def test_a_server_timeout_stops_the_generation(tiny_cache: Path, tmp_path: Path) -> None:
    backend = _backend(tiny_cache)
    await anyio.to_thread.run_sync(backend.warm_up, ["text_to_image"])
    settings = ServerSettings(store_root=tmp_path / "store", request_timeout_s=0.5, max_steps=1000)
    async with Client(build_server(settings, backend=backend)) as client:
        result = await _call(client, "text_to_image", prompt="a fox", width=64, height=64, seed=1, steps=1000)
        assert result.is_error
        assert "timed out" in _text(result)
        with anyio.fail_after(30):
            await eventually(lambda: backend.stats.cancelled >= 1)
    assert backend.stats.images == 0
    assert backend.stats.steps < 500, f"{backend.stats.steps} of 1000 steps ran"
