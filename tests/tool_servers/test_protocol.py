"""The MCP surface beyond the tools' own work: titles, annotations, refusals, identity, links, listings.

Every check goes through the public client against a real server (in-process): what an MCP host
sees is what is tested.
"""

from __future__ import annotations

import base64
import io
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.types import CallToolResult, ResourceLink, TextContent
from PIL import Image

from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

WAIT_S = 10


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings(store_root=tmp_path / "store")


@pytest.fixture
def client(settings: ServerSettings) -> Client:
    return Client(build_server(settings))


async def _call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    with anyio.fail_after(WAIT_S):
        return await client.call_tool(tool, arguments)


def _text(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def _refusal(client: Client, tool: str, **arguments: Any) -> str:
    result = await _call(client, tool, **arguments)
    assert result.is_error, result.structured_content
    text = _text(result)
    # Plain sentences: none of pydantic's wording, type names or documentation links.
    for leaked in ("pydantic", "https://", "Input should", "validation error", "type=", "[type"):
        assert leaked not in text, text
    return text


async def _made(client: Client, prompt: str = "a red car", seed: int = 1) -> dict[str, Any]:
    result = await _call(client, "text_to_image", prompt=prompt, width=128, height=128, seed=seed)
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_every_tool_has_a_title_and_honest_hints(client: Client) -> None:
    async with client:
        with anyio.fail_after(WAIT_S):
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    hints: dict[str, tuple[bool | None, bool | None, bool | None, bool | None]] = {}
    for name, tool in tools.items():
        assert tool.title, name
        assert tool.title != name
        assert tool.annotations is not None, name
        a = tool.annotations
        hints[name] = (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)
    # (read-only, destructive, idempotent, open-world): only inspect_image reads, no tool destroys,
    # an omitted seed makes a new variation, and every tool stays inside this server's store.
    assert hints == {
        "text_to_image": (False, False, False, False),
        "edit_image": (False, False, False, False),
        "reference_to_image": (False, False, False, False),
        "inspect_image": (True, None, True, False),
        "upload_image": (False, False, True, False),
    }


def _undescribed(schema: dict[str, Any], defs: dict[str, Any], path: str, seen: set[str]) -> list[str]:
    """Every property under ``schema`` (following ``$ref``, arrays and unions) without a description."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen.add(name)
        return _undescribed(defs[name], defs, f"{path}<{name}>", seen)
    missing: list[str] = []
    for key, prop in schema.get("properties", {}).items():
        if not prop.get("description"):
            missing.append(f"{path}.{key}")
        missing += _undescribed(prop, defs, f"{path}.{key}", seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            missing += _undescribed(option, defs, path, seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            missing += _undescribed(schema[key], defs, f"{path}[]", seen)
    for option in schema.get("prefixItems", []):
        missing += _undescribed(option, defs, f"{path}[]", seen)
    return missing


async def test_every_output_field_is_described(client: Client) -> None:
    async with client:
        with anyio.fail_after(WAIT_S):
            tools = (await client.list_tools()).tools
    missing: list[str] = []
    for tool in tools:
        assert tool.output_schema is not None, tool.name
        missing += _undescribed(tool.output_schema, tool.output_schema.get("$defs", {}), tool.name, set())
    assert missing == []


def test_the_walk_finds_an_undescribed_field_behind_a_reference() -> None:
    schema = {
        "properties": {"a": {"description": "x", "type": "array", "items": {"$ref": "#/$defs/B"}}},
        "$defs": {"B": {"properties": {"c": {"type": "string"}}}},
    }
    assert _undescribed(schema, schema["$defs"], "t", set()) == ["t.a[]<B>.c"]


async def test_unknown_arguments_are_refused_by_name(client: Client, settings: ServerSettings) -> None:
    async with client:
        text = await _refusal(client, "text_to_image", prompt="a red car", sed=3, color="red")
        assert "'sed' (did you mean 'seed'?)" in text
        assert "'color'" in text
        assert "prompt, width, height, seed, steps, guidance, preview" in text
        text = await _refusal(client, "inspect_image", image="img_" + "0" * 24, question="how many?")
        assert "'question' (did you mean 'questions'?)" in text
        with anyio.fail_after(WAIT_S):
            tools = (await client.list_tools()).tools
    assert all(tool.input_schema.get("additionalProperties") is False for tool in tools)
    # Refused before any work: nothing was made.
    assert list(settings.store_root.rglob("img_*")) == []


@pytest.mark.parametrize(
    ("tool", "arguments", "sentence"),
    [
        ("text_to_image", {"prompt": "a car", "width": 10}, "width must be at least 64 (got 10)"),
        ("text_to_image", {"prompt": "a car", "height": 4096}, "height must be at most 2048 (got 4096)"),
        ("text_to_image", {"prompt": "a car", "seed": -1}, "seed must be at least 0 (got -1)"),
        ("text_to_image", {"prompt": "a car", "guidance": 99.5}, "guidance must be at most 50.0 (got 99.5)"),
        ("text_to_image", {"prompt": "a car", "width": "wide"}, 'width must be a whole number (got "wide")'),
        ("text_to_image", {"prompt": ""}, "prompt must not be empty"),
        ("text_to_image", {"prompt": "x" * 2001}, "prompt must be at most 2000 characters long (got 2001 characters)"),
        ("text_to_image", {"width": 128}, "prompt is required"),
        ("text_to_image", {"prompt": "a car", "preview": "maybe"}, 'preview must be true or false (got "maybe")'),
        ("edit_image", {"image": "cat.png", "instruction": "x"}, "image must be an image handle, 'img_' followed"),
        (
            "reference_to_image",
            {"prompt": "a car", "references": ["img_" + "0" * 24] * 5},
            "references must have at most 4 items (got 5 items)",
        ),
        ("reference_to_image", {"prompt": "a car", "references": ["bad"]}, "references[0] must be an image handle"),
        ("reference_to_image", {"prompt": "a car", "references": []}, "references must have at least 1 items"),
        ("inspect_image", {"image": "img_" + "0" * 24, "questions": [""]}, "questions[0] must not be empty"),
    ],
)
async def test_invalid_values_are_refused_in_a_sentence_naming_the_field_and_limit(
    client: Client, tool: str, arguments: dict[str, Any], sentence: str
) -> None:
    async with client:
        text = await _refusal(client, tool, **arguments)
    assert text.startswith(f"Invalid arguments for {tool}: "), text
    assert sentence in text, text


async def test_initialize_names_the_server_and_the_package_version(client: Client) -> None:
    async with client:
        info, capabilities = client.server_info, client.server_capabilities
    assert info is not None
    assert (info.name, info.version) == ("visioncreator-tools", version("visioncreator"))
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", info.version)
    # No prompts: not advertised, and not served.
    assert capabilities.prompts is None
    assert capabilities.resources is not None
    assert capabilities.tools is not None


async def test_prompts_are_not_served(client: Client) -> None:
    async with client:
        with anyio.fail_after(WAIT_S), pytest.raises(MCPError, match="Method not found"):
            await client.list_prompts()


def _png(color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def test_each_new_image_comes_with_a_resource_link_that_reads_back(client: Client) -> None:
    async with client:
        made = await _call(client, "text_to_image", prompt="two red apples", width=128, height=96, seed=3)
        assert made.structured_content is not None
        handle = made.structured_content["handle"]
        edited = await _call(client, "edit_image", image=handle, instruction="make the apple blue", seed=1)
        referenced = await _call(client, "reference_to_image", prompt="an apple", references=[handle], seed=2)
        uploaded = await _call(client, "upload_image", data=_png((10, 200, 30)))
        for result in (made, edited, referenced, uploaded):
            assert not result.is_error, _text(result)
            assert result.structured_content is not None
            links = [block for block in result.content if isinstance(block, ResourceLink)]
            new = result.structured_content["handle"]
            assert [(link.uri, link.name, link.mime_type) for link in links] == [(f"image://{new}", new, "image/png")]
            # The handle, the structured result and the text block stay as they were, beside the link.
            assert isinstance(result.content[0], TextContent)
            with anyio.fail_after(WAIT_S):
                contents = (await client.read_resource(links[0].uri)).contents
            assert contents[0].mime_type == "image/png"
        inspected = await _call(client, "inspect_image", image=handle)
        assert not any(isinstance(block, ResourceLink) for block in inspected.content)


async def test_resources_list_pages_through_the_store_by_handle(tmp_path: Path) -> None:
    settings = ServerSettings(store_root=tmp_path / "store", resource_page_size=3)
    async with Client(build_server(settings)) as client:
        made = sorted([(await _made(client, seed=seed))["handle"] for seed in range(7)])
        assert len(set(made)) == 7
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            with anyio.fail_after(WAIT_S):
                page = await client.list_resources(cursor=cursor, cache_mode="bypass")
            pages.append([resource.name for resource in page.resources])
            for resource in page.resources:
                assert (str(resource.uri), resource.mime_type) == (f"image://{resource.name}", "image/png")
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            if len(pages) == 1:
                # An image stored while a client pages through comes on a later page or not at all.
                await _made(client, seed=99)
        listed = [name for page in pages for name in page]
        assert all(len(page) == 3 for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= 3
        assert listed == sorted(set(listed))
        assert set(made) <= set(listed)
        assert len(listed) in (7, 8)
        with anyio.fail_after(WAIT_S), pytest.raises(MCPError, match="invalid cursor"):
            await client.list_resources(cursor="../../etc", cache_mode="bypass")


async def test_resources_list_of_an_empty_store_is_empty(client: Client) -> None:
    async with client:
        with anyio.fail_after(WAIT_S):
            page = await client.list_resources(cache_mode="bypass")
    assert (page.resources, page.next_cursor) == ([], None)


async def test_an_edit_the_back_end_cannot_apply_is_a_tool_error_naming_why(client: Client) -> None:
    async with client:
        handle = (await _made(client))["handle"]
        result = await _call(client, "edit_image", image=handle, instruction="please improve the vibe", seed=1)
    assert result.is_error
    text = _text(result)
    assert "cannot apply 'please improve the vibe': it understands" in text
    assert "make the car blue" in text


async def test_an_edit_says_whether_it_changed_the_image(client: Client) -> None:
    async with client:
        made = await _made(client, prompt="a red car")
        assert "changed" not in made  # only an edit's result says it
        results = {}
        for instruction in ("make the car blue", "remove the cat", "make the car red"):
            result = await _call(client, "edit_image", image=made["handle"], instruction=instruction, seed=1)
            assert not result.is_error, _text(result)
            assert result.structured_content is not None
            results[instruction] = result.structured_content["changed"]
    assert results == {"make the car blue": True, "remove the cat": False, "make the car red": False}
