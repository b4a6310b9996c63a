"""Hostile and mistaken input: each is a tool error the model can read, and the server keeps serving."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent
from PIL import Image

from visioncreator.tool_servers.journal import JOURNAL_DIR
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

MAX_INPUT_BYTES = 300_000
UNKNOWN = "img_" + "0" * 24


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((side, side), 80).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _cases(png_header: Callable[[int, int], bytes]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(id, tool, arguments, a phrase the error message must contain)."""
    return [
        ("unknown-tool", "delete_everything", {}, "Unknown tool"),
        ("missing-argument", "text_to_image", {}, "prompt"),
        ("wrong-type", "text_to_image", {"prompt": "a dog", "width": "wide"}, "width"),
        ("wrong-type-list", "edit_image", {"image": ["img_"], "instruction": "x"}, "image"),
        ("negative-seed", "text_to_image", {"prompt": "a dog", "seed": -1}, "seed"),
        ("empty-prompt", "text_to_image", {"prompt": ""}, "prompt"),
        ("blank-prompt", "text_to_image", {"prompt": "   "}, "prompt is empty"),
        ("blank-instruction", "edit_image", {"image": UNKNOWN, "instruction": "\n"}, "instruction is empty"),
        (
            "over-settings-width",
            "text_to_image",
            {"prompt": "a dog", "width": 1536},
            "width 1536 exceeds max_width 1024",
        ),
        (
            "over-settings-height",
            "reference_to_image",
            {"prompt": "a", "references": [UNKNOWN], "height": 1536},
            "height 1536 exceeds max_height 1024",
        ),
        (
            "over-schema-width",
            "text_to_image",
            {"prompt": "a dog", "width": 4096},
            "width must be at most 2048 (got 4096)",
        ),
        (
            "under-schema-height",
            "text_to_image",
            {"prompt": "a dog", "height": 1},
            "height must be at least 64 (got 1)",
        ),
        (
            "unknown-handle",
            "edit_image",
            {"image": UNKNOWN, "instruction": "make it red"},
            f"unknown image handle {UNKNOWN}: call text_to_image first",
        ),
        (
            "unknown-reference",
            "reference_to_image",
            {"prompt": "a dog", "references": [UNKNOWN]},
            "unknown image handle",
        ),
        ("inspect-unknown", "inspect_image", {"image": UNKNOWN}, "unknown image handle"),
        ("path-as-handle", "inspect_image", {"image": "../../etc/passwd"}, "image"),
        ("absolute-path-handle", "edit_image", {"image": "/etc/passwd", "instruction": "x"}, "image"),
        ("too-many-references", "reference_to_image", {"prompt": "a", "references": [UNKNOWN] * 5}, "references"),
        ("no-references", "reference_to_image", {"prompt": "a", "references": []}, "references"),
        ("too-many-questions", "inspect_image", {"image": UNKNOWN, "questions": ["q"] * 9}, "questions"),
        ("upload-not-base64", "upload_image", {"data": "not base64 at all!"}, "not valid base64"),
        ("upload-text", "upload_image", {"data": _b64(b"hello, I am not an image")}, "not a supported image"),
        ("upload-gif", "upload_image", {"data": _b64(b"GIF89a" + b"\0" * 40)}, "not a supported image"),
        ("upload-truncated", "upload_image", {"data": _b64(_noise_png(64)[:200])}, "does not decode"),
        ("upload-bomb", "upload_image", {"data": _b64(png_header(100_000, 100_000))}, "max_decoded_pixels"),
        ("upload-over-bytes", "upload_image", {"data": _b64(_noise_png(400))}, f"max_input_bytes {MAX_INPUT_BYTES}"),
    ]


def _text(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings(
        store_root=tmp_path / "store", max_width=1024, max_height=1024, max_input_bytes=MAX_INPUT_BYTES
    )


async def test_every_bad_call_is_a_readable_tool_error_and_the_server_keeps_serving(
    settings: ServerSettings, png_header: Callable[[int, int], bytes]
) -> None:
    async with Client(build_server(settings)) as client:
        for case, tool, arguments, phrase in _cases(png_header):
            with anyio.fail_after(10):
                bad = await client.call_tool(tool, arguments)
            assert bad.is_error, case
            assert phrase in _text(bad), (case, _text(bad))
            assert len(_text(bad)) < 1000, case
            with anyio.fail_after(10):
                good = await client.call_tool("text_to_image", {"prompt": "a dog", "width": 64, "height": 64})
            assert not good.is_error, (case, _text(good))
    # Nothing but store files (images, the journal of write-behind recipes) was written, only inside the store.
    for path in (p for p in settings.store_root.rglob("*") if p.is_file()):
        assert path.suffix == ".png" or (path.parent.name == JOURNAL_DIR and path.suffix == ".jsonl"), path


async def test_upload_within_limits_still_works(settings: ServerSettings) -> None:
    async with Client(build_server(settings)) as client:
        with anyio.fail_after(10):
            result = await client.call_tool("upload_image", {"data": _b64(_noise_png(100))})
        assert not result.is_error, _text(result)


@pytest.mark.parametrize(
    "uri",
    [
        "image://../../etc/passwd",
        "image://..%2F..%2Fetc%2Fpasswd",
        "image://img_zz",
        f"image://{UNKNOWN}",
        f"truth://{UNKNOWN}",
        "file:///etc/passwd",
    ],
)
async def test_resources_never_serve_anything_but_stored_images(settings: ServerSettings, uri: str) -> None:
    async with Client(build_server(settings)) as client:
        with anyio.fail_after(10), pytest.raises(MCPError, match=r"(?i)unknown"):
            await client.read_resource(uri)
        with anyio.fail_after(10):
            good = await client.call_tool("text_to_image", {"prompt": "a dog", "width": 64, "height": 64})
        assert not good.is_error
