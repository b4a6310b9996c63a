from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import BlobResourceContents, CallToolResult, ImageContent, TextContent, TextResourceContents
from PIL import Image
from pydantic import BaseModel

from visioncreator.tool_servers.backend import Generated, SourceImage
from visioncreator.tool_servers.decode import decode_image
from visioncreator.tool_servers.scene import GroundTruth
from visioncreator.tool_servers.schemas import (
    EditImageInput,
    ImageResult,
    InspectImageInput,
    InspectResult,
    ReferenceToImageInput,
    TextToImageInput,
    UploadImageInput,
)
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend

TOOLS: dict[str, type[BaseModel]] = {
    "text_to_image": TextToImageInput,
    "edit_image": EditImageInput,
    "reference_to_image": ReferenceToImageInput,
    "inspect_image": InspectImageInput,
    "upload_image": UploadImageInput,
}


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings(store_root=tmp_path / "store")


@pytest.fixture
def client(settings: ServerSettings) -> Client:
    # Connected inside each test (``async with client``): an async fixture would set up and tear
    # down the client's task group in different tasks, which anyio forbids.
    return Client(build_server(settings))


async def _call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    with anyio.fail_after(10):
        return await client.call_tool(tool, arguments)


async def _ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await _call(client, tool, **arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    # The text block carries the same JSON, for clients that ignore structured content.
    text = [block for block in result.content if isinstance(block, TextContent)]
    assert json.loads(text[0].text) == result.structured_content
    return dict(result.structured_content)


def _text(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def _read(client: Client, uri: str) -> BlobResourceContents | TextResourceContents:
    with anyio.fail_after(10):
        return (await client.read_resource(uri)).contents[0]


async def test_lists_the_five_tools_in_order_with_the_contract_schemas(client: Client) -> None:
    async with client:
        with anyio.fail_after(10):
            listed = (await client.list_tools()).tools
        assert [tool.name for tool in listed] == list(TOOLS)
        for tool in listed:
            model_schema = TOOLS[tool.name].model_json_schema()
            assert tool.input_schema["properties"] == model_schema["properties"]
            assert sorted(tool.input_schema.get("required", [])) == sorted(model_schema.get("required", []))
            expected_output = InspectResult if tool.name == "inspect_image" else ImageResult
            assert tool.output_schema is not None
            assert tool.output_schema["properties"] == expected_output.model_json_schema()["properties"]


async def test_descriptions_are_written_for_a_model(client: Client) -> None:
    async with client:
        with anyio.fail_after(10):
            described = {tool.name: tool.description or "" for tool in (await client.list_tools()).tools}
        assert "for every image after the first in a multi-image task" in described["reference_to_image"]
        assert "Returns a handle" in described["text_to_image"]
        assert "NEW handle" in described["edit_image"]
        assert "known=false" in described["inspect_image"]
        assert "base64" in described["upload_image"]
        for text in described.values():
            assert "Args:" not in text
            assert len(text) > 200


async def test_text_to_image_stores_a_readable_image_with_truth(client: Client) -> None:
    async with client:
        result = ImageResult.model_validate(
            await _ok(
                client, "text_to_image", prompt="two red apples left of a blue car", width=320, height=192, seed=7
            )
        )
        assert (result.width, result.height, result.seed, result.tool) == (320, 192, 7, "text_to_image")
        assert result.uri == f"image://{result.handle}"

        blob = await _read(client, result.uri)
        assert isinstance(blob, BlobResourceContents)
        assert blob.mime_type == "image/png"
        data = base64.b64decode(blob.blob)
        # Answered before the file is written (write-behind, the synthetic default): no size yet.
        assert result.bytes is None
        assert len(data) > 0
        assert decode_image(data, max_bytes=1 << 24, max_pixels=1 << 24).size == (320, 192)

        truth_text = await _read(client, f"truth://{result.handle}")
        assert isinstance(truth_text, TextResourceContents)
        truth = GroundTruth.model_validate_json(truth_text.text)
        assert (truth.scene.width, truth.scene.height, truth.seed) == (320, 192, 7)
        assert [obj.kind for obj in truth.scene.objects].count("apple") == 2


async def test_same_seed_same_handle_and_no_seed_reports_a_fresh_one(client: Client) -> None:
    async with client:
        first = await _ok(client, "text_to_image", prompt="a green dog", seed=11)
        second = await _ok(client, "text_to_image", prompt="a green dog", seed=11)
        assert first["handle"] == second["handle"]
        fresh = [await _ok(client, "text_to_image", prompt="a green dog") for _ in range(2)]
        assert fresh[0]["seed"] != fresh[1]["seed"]
        replay = await _ok(client, "text_to_image", prompt="a green dog", seed=fresh[0]["seed"])
        assert replay["handle"] == fresh[0]["handle"]


async def test_preview_is_an_inline_png_thumbnail(client: Client, settings: ServerSettings) -> None:
    async with client:
        result = await _call(client, "text_to_image", prompt="a cat", width=512, height=256, seed=1, preview=True)
        images = [block for block in result.content if isinstance(block, ImageContent)]
        assert len(images) == 1
        assert images[0].mime_type == "image/png"
        thumb = decode_image(base64.b64decode(images[0].data), max_bytes=1 << 24, max_pixels=1 << 24)
        assert thumb.size == (settings.preview_size, settings.preview_size // 2)
        plain = await _call(client, "text_to_image", prompt="a cat", width=512, height=256, seed=1)
        assert not any(isinstance(block, ImageContent) for block in plain.content)


async def test_edit_reference_and_inspect(client: Client) -> None:
    async with client:
        source = await _ok(client, "text_to_image", prompt="a red car", seed=3)
        edited = await _ok(client, "edit_image", image=source["handle"], instruction="make the car blue", seed=3)
        assert edited["handle"] != source["handle"]
        assert edited["tool"] == "edit_image"
        seen = InspectResult.model_validate(
            await _ok(client, "inspect_image", image=edited["handle"], questions=["how many cars?"])
        )
        assert seen.handle == edited["handle"]
        assert seen.known
        # The default observer may miscount (observe_count_rate, drawn from the handle): the colour
        # it reports and the stored truth are what the edit must have changed.
        assert {obj.color for obj in seen.objects if obj.kind == "car"} == {"blue"}
        edited_truth = await _read(client, f"truth://{edited['handle']}")
        assert isinstance(edited_truth, TextResourceContents)
        cars = [o for o in GroundTruth.model_validate_json(edited_truth.text).scene.objects if o.kind == "car"]
        assert [car.color for car in cars] == ["blue"]
        assert seen.answers[0].question == "how many cars?"

        panel = await _ok(
            client, "reference_to_image", prompt="the car on a beach", references=[source["handle"]], seed=5
        )
        assert panel["tool"] == "reference_to_image"
        truth_text = await _read(client, f"truth://{panel['handle']}")
        assert isinstance(truth_text, TextResourceContents)
        truth = GroundTruth.model_validate_json(truth_text.text)
        assert truth.sources == (source["handle"],)


async def test_upload_round_trip_keeps_handle_and_truth(client: Client) -> None:
    async with client:
        made = await _ok(client, "text_to_image", prompt="a yellow bus", seed=2)
        blob = await _read(client, made["uri"])
        assert isinstance(blob, BlobResourceContents)
        uploaded = await _ok(client, "upload_image", data=blob.blob)
        assert uploaded["handle"] == made["handle"]
        assert uploaded["tool"] == "upload_image"


async def test_truth_of_an_image_without_truth_is_null(client: Client) -> None:
    async with client:
        buffer = io.BytesIO()
        Image.new("RGB", (80, 60), (9, 9, 9)).save(buffer, format="JPEG")
        uploaded = await _ok(client, "upload_image", data=base64.b64encode(buffer.getvalue()).decode())
        assert (uploaded["width"], uploaded["height"]) == (80, 60)
        truth = await _read(client, f"truth://{uploaded['handle']}")
        assert isinstance(truth, TextResourceContents)
        assert truth.text == "null"


@pytest.mark.parametrize(
    ("overrides", "arguments", "message"),
    [
        ({"max_width": 256}, {"width": 512}, "width 512 exceeds max_width 256"),
        ({"max_height": 256}, {"height": 512}, "height 512 exceeds max_height 256"),
        ({"max_pixels": 100_000}, {"width": 512, "height": 512}, "262144 pixels exceeds max_pixels 100000"),
    ],
)
async def test_settings_limits_are_tool_errors_naming_the_limit(
    tmp_path: Path, overrides: dict[str, int], arguments: dict[str, int], message: str
) -> None:
    settings = ServerSettings(store_root=tmp_path / "s", **overrides)
    async with Client(build_server(settings)) as client:
        result = await _call(client, "text_to_image", prompt="a dog", **arguments)
        assert result.is_error
        assert message in _text(result)
        await _ok(client, "text_to_image", prompt="a dog", width=128, height=128)


class _Broken(SyntheticBackend):
    """The real back end, made to fail or stall on request: the fault the server must absorb."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    async def text_to_image(self, args: TextToImageInput) -> Generated:
        if args.prompt == "crash":
            raise RuntimeError("renderer exploded\n" + "x" * 5000)
        await anyio.sleep(self.delay)
        return await super().text_to_image(args)

    async def edit_image(self, args: EditImageInput, source: SourceImage) -> Generated:
        return Generated(image=source.image.resize((4096, 4096)), seed=args.seed or 0)


async def test_backend_failures_become_short_tool_errors(settings: ServerSettings) -> None:
    async with Client(build_server(settings, backend=_Broken())) as client:
        crashed = await _call(client, "text_to_image", prompt="crash")
        assert crashed.is_error
        text = _text(crashed)
        assert "text_to_image failed in the synthetic back end: RuntimeError: renderer exploded" in text
        assert len(text) < 500
        good = await _ok(client, "text_to_image", prompt="a dog", seed=1)
        oversized = await _call(client, "edit_image", image=good["handle"], instruction="bigger")
        assert oversized.is_error
        assert "exceeds max_width 2048" in _text(oversized)


async def test_slow_calls_time_out_and_concurrent_calls_all_finish(tmp_path: Path) -> None:
    settings = ServerSettings(store_root=tmp_path / "s", request_timeout_s=0.2, max_concurrency=2)
    async with Client(build_server(settings, backend=_Broken(delay=1.0))) as client:
        result = await _call(client, "text_to_image", prompt="a dog")
        assert result.is_error
        assert "timed out after 0.2 s (request_timeout_s)" in _text(result)

    async with Client(build_server(settings.model_copy(update={"request_timeout_s": 10.0}))) as client:
        handles: list[str] = []

        async def one(seed: int) -> None:
            handles.append(
                (await _ok(client, "text_to_image", prompt="a dog", width=128, height=128, seed=seed))["handle"]
            )

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for seed in range(6):
                    group.start_soon(one, seed)
        assert len(handles) == 6


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_settings_refuse_a_public_host_without_a_token(host: str) -> None:
    with pytest.raises(ValueError, match="set bearer_token"):
        ServerSettings(host=host)
    assert ServerSettings(host=host, bearer_token="t" * 32).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_settings_allow_loopback_without_a_token(host: str) -> None:
    assert ServerSettings(host=host).bearer_token is None


def test_settings_store_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VISIONCREATOR_STORE", str(tmp_path / "elsewhere"))
    assert ServerSettings().store_root == tmp_path / "elsewhere"
    monkeypatch.delenv("VISIONCREATOR_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert ServerSettings().store_root == tmp_path / "cache" / "visioncreator" / "images"


def test_settings_describe_every_field() -> None:
    assert all(field.description for field in ServerSettings.model_fields.values())


def test_importing_the_package_does_not_load_the_mcp_sdk() -> None:
    code = (
        "import sys, visioncreator.tool_servers as t\n"
        "assert 'mcp' not in sys.modules\n"
        "assert callable(t.build_server) and 'mcp' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
