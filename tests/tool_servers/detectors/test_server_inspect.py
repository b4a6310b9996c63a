"""``inspect_image`` on an uploaded photo, through a real MCP server with the synthetic back end."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from PIL import Image

from visioncreator.tool_servers.schemas import InspectResult
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

# The first call loads four models (a few seconds on two cores); later ones take about one.
_TIMEOUT_S = 60


async def _ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    with anyio.fail_after(_TIMEOUT_S):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_an_uploaded_photo_is_inspected_by_the_detectors(tmp_path: Path, astronaut: Image.Image) -> None:
    for module in ("rapidocr_onnxruntime", "cv2", "torch", "efficientnet_lite_pytorch", "brisque"):
        pytest.importorskip(module)
    buffer = io.BytesIO()
    astronaut.save(buffer, format="JPEG", quality=92)
    async with Client(build_server(ServerSettings(store_root=tmp_path / "store"))) as client:
        uploaded = await _ok(client, "upload_image", data=base64.b64encode(buffer.getvalue()).decode())
        seen = InspectResult.model_validate(
            await _ok(client, "inspect_image", image=uploaded["handle"], questions=["how many faces?", "what text?"])
        )
    assert not seen.known
    assert (seen.width, seen.height, seen.objects) == (512, 512, [])
    assert seen.analysis is not None
    assert set(seen.analysis.detectors.values()) == {"ok"}
    assert seen.analysis.faces is not None
    assert len(seen.analysis.faces) == 1
    assert [a.answer for a in seen.answers] == ["1", "none"]
    assert seen.generator_s > 0


async def test_a_synthetic_image_is_still_inspected_from_its_truth(tmp_path: Path) -> None:
    async with Client(build_server(ServerSettings(store_root=tmp_path / "store"))) as client:
        made = await _ok(client, "text_to_image", prompt="two red apples", seed=1)
        seen = InspectResult.model_validate(await _ok(client, "inspect_image", image=made["handle"]))
    assert seen.known
    assert seen.analysis is None
    assert seen.counts == {"apple": 2}
