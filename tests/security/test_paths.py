"""No tool takes a file path, and the store writes only under its root."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from PIL import Image

from visioncreator.tool_servers.errors import UnknownHandleError
from visioncreator.tool_servers.schemas import HANDLE_PATTERN
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.store import ImageStore

_PATH_LIKE = re.compile(r"(?i)(path|file|dir|folder|filename|location|url|uri)")
_HANDLE_FIELDS = {"image", "references"}


def _properties(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every property of a schema and of the schemas it nests, by name (resolving local $refs)."""
    found: dict[str, dict[str, Any]] = {}
    stack = [schema]
    while stack:
        node = stack.pop()
        if "$ref" in node:
            stack.append(defs[node["$ref"].rsplit("/", 1)[-1]])
            continue
        for name, sub in node.get("properties", {}).items():
            found[name] = sub
            stack.append(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                stack.append(node[key])
        for key in ("anyOf", "oneOf", "allOf"):
            stack.extend(node.get(key, []))
    return found


def _patterns(schema: dict[str, Any]) -> set[str]:
    found = {schema["pattern"]} if "pattern" in schema else set()
    for key in ("items",):
        if isinstance(schema.get(key), dict):
            found |= _patterns(schema[key])
    for option in schema.get("anyOf", []):
        found |= _patterns(option)
    return found


async def test_no_tool_input_is_a_path_and_image_inputs_are_handles(tmp_path: Path) -> None:
    async with Client(build_server(ServerSettings(store_root=tmp_path / "store"))) as client:
        with anyio.fail_after(10):
            tools = (await client.list_tools()).tools
    assert len(tools) == 5
    handle_fields = 0
    for tool in tools:
        properties = _properties(tool.input_schema, tool.input_schema.get("$defs", {}))
        for name, schema in properties.items():
            assert not _PATH_LIKE.search(name), f"{tool.name}.{name} looks like a path"
            assert schema.get("format") not in ("uri", "uri-reference", "path"), f"{tool.name}.{name}"
            if name in _HANDLE_FIELDS:
                handle_fields += 1
                # Handle fields accept 'img_' + hex only: no separator, dot or scheme can get through.
                assert _patterns(schema) == {HANDLE_PATTERN}, f"{tool.name}.{name}"
        # Nothing else may slip in beside the declared fields.
        assert tool.input_schema.get("additionalProperties") is not True, tool.name
    assert handle_fields == 3  # edit_image.image, reference_to_image.references, inspect_image.image
    assert HANDLE_PATTERN.startswith("^img_")
    assert HANDLE_PATTERN.endswith("$")


@pytest.mark.parametrize("handle", ["../../etc/passwd", "img_../../../x", "/etc/passwd", "img_" + "0" * 23 + "/"])
def test_path_of_refuses_anything_but_a_handle(tmp_path: Path, handle: str) -> None:
    store = ImageStore(tmp_path / "store")
    with pytest.raises(UnknownHandleError):
        store.path_of(handle)


def test_store_never_writes_through_a_link_out_of_its_root(tmp_path: Path) -> None:
    image = Image.new("RGB", (32, 32), (200, 10, 10))
    handle = ImageStore(tmp_path / "probe").put(image).handle
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    root.mkdir()
    # A tampered store: the handle's shard directory is a link to somewhere else.
    (root / handle[4:6]).symlink_to(outside, target_is_directory=True)
    store = ImageStore(root)
    with pytest.raises(UnknownHandleError):
        store.put(image)
    with pytest.raises(UnknownHandleError):
        store.read_bytes(handle)
    assert list(outside.iterdir()) == []
    # Untampered, every file the store writes is under its root.
    clean = ImageStore(tmp_path / "clean")
    stored = clean.put(image)
    assert clean.path_of(stored.handle).is_relative_to(clean.root)
    assert [p for p in clean.root.rglob("*") if p.is_file()] == [clean.path_of(stored.handle)]
