"""Decoded pixels are bounded: per image (max_decoded_pixels, before decoding) and across all
in-flight calls (max_inflight_pixels). Calls over the budget wait their turn and all complete;
a call that could never fit fails at once; every exit gives its pixels back.

The server is the real one (the real ToolRunner behind the real registration, driven through
the MCP client in-process) so the test can read its budget; a back end that waits at a gate
stands in for a slow generator where a call must be caught while it holds pixels.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent
from PIL import Image

from visioncreator.tool_servers.backend import Generated, ImageBackend, SourceImage
from visioncreator.tool_servers.budget import PixelBudget, release_free_memory
from visioncreator.tool_servers.decode import FitBox, decode_image
from visioncreator.tool_servers.errors import LimitExceededError
from visioncreator.tool_servers.registration import image_tools
from visioncreator.tool_servers.schemas import ReferenceToImageInput
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend
from visioncreator.tool_servers.tools import ToolRunner

WAIT_S = 20


class _Gated(SyntheticBackend):
    """The real synthetic back end, whose reference_to_image waits at a gate the test opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.entered = anyio.Event()

    async def reference_to_image(self, args: ReferenceToImageInput, references: list[SourceImage]) -> Generated:
        self.entered.set()
        await self.gate.wait()
        return await super().reference_to_image(args, references)


class _Failing(SyntheticBackend):
    """Injects a back-end crash after the references were loaded."""

    async def reference_to_image(self, args: ReferenceToImageInput, references: list[SourceImage]) -> Generated:
        raise RuntimeError("injected back-end failure")


def _serve(settings: ServerSettings, backend: ImageBackend | None = None) -> tuple[Client, ToolRunner]:
    store = ImageStore(
        settings.store_root,
        max_input_bytes=settings.max_input_bytes,
        max_decoded_pixels=settings.max_decoded_pixels,
        allowed_formats=settings.allowed_input_formats,
    )
    runner = ToolRunner(settings, backend or SyntheticBackend(), store)
    server = MCPServer("pixel-budget-test", tools=image_tools(runner))
    return Client(server), runner


def _stored(runner: ToolRunner, side: int, shade: int) -> str:
    return runner.store.put(Image.new("RGB", (side, side), (shade, 90, 160))).handle


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 140, 60)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _text(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def _call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    with anyio.fail_after(WAIT_S):
        return await client.call_tool(tool, arguments)


async def _references(client: Client, *handles: str) -> CallToolResult:
    return await _call(client, "reference_to_image", prompt="a red dog", references=list(handles), width=64, height=64)


async def test_an_image_over_max_decoded_pixels_is_refused_before_it_is_decoded(
    tmp_path: Path, png_header: Callable[[int, int], bytes]
) -> None:
    client, runner = _serve(ServerSettings(store_root=tmp_path / "store"))
    async with client:
        # Only a header: had the server tried to decode it, it would have failed as corrupt.
        bomb = base64.b64encode(png_header(7_000, 7_000)).decode("ascii")
        result = await _call(client, "upload_image", data=bomb)
        assert result.is_error
        assert "7000x7000 = 49000000 pixels, over the limit max_decoded_pixels 40000000" in _text(result)
        # Refused on the header's claim: not a pixel was reserved, so none was allocated.
        assert runner.pixels.high_water == 0


async def test_calls_over_the_budget_wait_their_turn_and_all_complete(tmp_path: Path) -> None:
    side = 128
    one = side * side
    # Each call reserves its two references plus one more for the decode in progress (3 * one),
    # then keeps two: room for two calls at once, not six.
    settings = ServerSettings(store_root=tmp_path / "store", max_inflight_pixels=6 * one, simulated_latency_s=0.1)
    client, runner = _serve(settings)
    handles = [_stored(runner, side, shade) for shade in (10, 20, 30, 40)]
    async with client:
        calls = [_references(client, handles[i % 4], handles[(i + 1) % 4]) for i in range(6)]
        results = await asyncio.gather(*calls)
    assert [_text(r) for r in results if r.is_error] == []
    budget = runner.pixels
    assert budget.high_water <= budget.capacity
    # Calls overlapped (the budget held more than one call's worth) and some had to wait.
    assert budget.high_water > 3 * one
    assert budget.waits > 0
    assert budget.in_use == 0


async def test_a_call_larger_than_the_whole_budget_fails_at_once(tmp_path: Path) -> None:
    backend = _Gated()
    settings = ServerSettings(store_root=tmp_path / "store", max_inflight_pixels=50_000)
    client, runner = _serve(settings, backend)
    small = _stored(runner, 100, 1)
    async with client, anyio.create_task_group() as group:
        holder: list[CallToolResult] = []

        async def hold() -> None:
            holder.append(await _references(client, small))

        group.start_soon(hold)
        with anyio.fail_after(WAIT_S):
            await backend.entered.wait()
        assert runner.pixels.in_use == 100 * 100
        # 200x200 decoded plus 200x200 kept is more than the whole budget: no wait could help,
        # so the answer comes while the holder still holds its pixels.
        refused = await _call(client, "upload_image", data=_png(200, 200))
        assert refused.is_error
        assert "upload_image needs 80000 decoded pixels at once, more than max_inflight_pixels 50000" in _text(refused)
        assert holder == []
        backend.gate.set()
    assert not holder[0].is_error, _text(holder[0])
    assert runner.pixels.in_use == 0


async def test_the_budget_is_given_back_after_errors_and_timeouts(tmp_path: Path) -> None:
    side = 100
    settings = ServerSettings(store_root=tmp_path / "store", max_inflight_pixels=2 * side * side)
    client, runner = _serve(settings, _Failing())
    handle = _stored(runner, side, 5)
    async with client:
        for result in await asyncio.gather(*(_references(client, handle) for _ in range(4))):
            assert "injected back-end failure" in _text(result)
        assert runner.pixels.in_use == 0
        missing = await _references(client, handle, "img_" + "0" * 24)
        assert missing.is_error
        assert runner.pixels.in_use == 0

    # Timeouts cancel calls both while they hold pixels and while they wait for them.
    backend = _Gated()
    settings = ServerSettings(store_root=tmp_path / "store", max_inflight_pixels=2 * side * side, request_timeout_s=0.5)
    client, runner = _serve(settings, backend)
    async with client:
        results = await asyncio.gather(*(_references(client, handle) for _ in range(3)))
        assert all("timed out after 0.5 s (request_timeout_s)" in _text(result) for result in results)
        assert runner.pixels.waits > 0
        assert runner.pixels.in_use == 0
        # Nothing leaked: a call that needs the whole budget gets it.
        backend.gate.set()
        served = await _references(client, handle)
        assert not served.is_error, _text(served)
    assert runner.pixels.in_use == 0


async def test_large_uploads_and_stored_images_are_kept_at_most_tool_sized(tmp_path: Path) -> None:
    settings = ServerSettings(store_root=tmp_path / "store", max_width=256, max_height=256, max_pixels=256 * 200)
    client, runner = _serve(settings)
    big = runner.store.put(Image.new("RGB", (1200, 600), (200, 10, 10))).handle
    async with client:
        uploaded = await _call(client, "upload_image", data=_png(1000, 1000))
        assert not uploaded.is_error, _text(uploaded)
        assert uploaded.structured_content is not None
        # Fitted, aspect ratio kept: 1000x1000 into 256x256 with at most 51,200 pixels.
        assert (uploaded.structured_content["width"], uploaded.structured_content["height"]) == (226, 226)
        assert runner.pixels.high_water == 1000 * 1000 + 226 * 226
        # An oversized image already in the store is downscaled as it is loaded, so its edit is
        # within the tool limits instead of failing on max_width.
        edited = await _call(client, "edit_image", image=big, instruction="add a blue car")
        assert not edited.is_error, _text(edited)
        assert edited.structured_content is not None
        assert (edited.structured_content["width"], edited.structured_content["height"]) == (256, 128)
    assert runner.pixels.in_use == 0


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("WEBP", "RGB")])
def test_decoding_to_fit_keeps_the_aspect_ratio_in_every_mode(fmt: str, mode: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1500, 600), (250, 10, 10)).convert(mode).save(buffer, format=fmt)
    image = decode_image(buffer.getvalue(), max_bytes=1 << 24, max_pixels=1 << 24, fit=FitBox(300, 300, 300 * 100))
    assert (image.mode, image.size) == ("RGB", (273, 109))
    red, green, _ = image.getpixel((136, 54))  # type: ignore[misc]
    assert red > 200
    assert green < 60


async def test_waiting_is_first_come_first_served_and_cancellation_leaks_nothing() -> None:
    budget = PixelBudget(10)
    order: list[str] = []
    first = budget.hold(8, "first")
    await first.__aenter__()

    async def take(name: str, pixels: int) -> None:
        async with budget.hold(pixels, name):
            order.append(name)

    big = asyncio.create_task(take("big", 6))
    await asyncio.sleep(0)
    # Fits now (8 + 2 <= 10) but must not pass the large call already waiting.
    small = asyncio.create_task(take("small", 2))
    cancelled = asyncio.create_task(take("cancelled", 1))
    await asyncio.sleep(0)
    assert order == []
    assert budget.waits == 3
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await first.__aexit__(None, None, None)
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(big, small)
    assert order == ["big", "small"]
    assert budget.in_use == 0
    assert budget.high_water <= budget.capacity
    with pytest.raises(LimitExceededError, match="needs 11 decoded pixels at once, more than max_inflight_pixels 10"):
        async with budget.hold(11, "huge"):
            pass


async def test_freed_memory_is_handed_back_once_large_holds_drain() -> None:
    budget = PixelBudget(1 << 26)
    async with budget.hold(1 << 24, "large"), budget.hold(1 << 23, "other") as other:
        other.shrink_to(0)
    assert budget.in_use == 0
    if not release_free_memory():
        # Not glibc: there is nothing to ask the allocator.
        assert budget.trims == 0
        return
    async with asyncio.timeout(WAIT_S):
        await budget.trimmed.wait()
    assert budget.trims == 1
