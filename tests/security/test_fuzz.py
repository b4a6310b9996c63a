"""Generated arguments against the real server in-process: never a crash, only tool errors or
valid results, and no file written outside the store.

Arguments are built from each tool's published JSON schema (values the schema allows) mixed
with junk (wrong types, huge and negative numbers, unicode, path-like strings, nested objects,
missing and extra keys). One long-lived client per tool runs on an event loop in a portal
thread, so hypothesis drives plain synchronous examples and every call stays bounded.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import CallToolResult, TextContent
from PIL import Image

from visioncreator.tool_servers.journal import JOURNAL_DIR
from visioncreator.tool_servers.schemas import HANDLE_PATTERN, ImageResult, InspectResult
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

pytestmark = pytest.mark.fuzz

EXAMPLES = 500
TOOLS = ("text_to_image", "edit_image", "reference_to_image", "inspect_image", "upload_image")
GOOD: dict[str, Any] = {"prompt": "a red dog", "width": 64, "height": 64, "seed": 1}

_PATHS = (
    "../../etc/passwd",
    "/etc/passwd",
    "img_../../../../tmp/x",
    "..\\..\\windows\\system32",
    "C:\\Windows\\win.ini",
    "file:///etc/shadow",
    "image://../../etc/passwd",
    "~/.ssh/id_rsa",
    "/dev/zero",
    "\x00",
    "img_" + "0" * 24 + "/../x",
    "%2e%2e%2f%2e%2e%2fetc",
    "out.png",
    "./img_000000000000000000000000.png",
)
_PROMPTS = (
    "two red apples left of a blue car",
    "a cat",
    'a sign that says "OPEN" in watercolor style',
    "ten green dogs",
    "make it blue",
    "remove the lamp",
    # edits the synthetic back end understands (others are refused since it says what it cannot apply)
    "add a red car",
    "make the dog blue",
    "remove the dog",
)


def _encoded(fmt: str, side: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((side, side), 50).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def _bomb() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


_FILES = (
    _encoded("PNG"),
    _encoded("JPEG"),
    _encoded("WEBP"),
    _encoded("PNG")[:60],
    _encoded("GIF"),
    _bomb(),
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"\xff\xd8\xff" + b"\0" * 30,
    b"hello",
)


def _junk() -> st.SearchStrategy[Any]:
    """Values of any JSON-ish type, including the absurd."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.sampled_from([0, -1, 2**31, 2**63, -(2**63), 10**30]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=40),
        st.sampled_from(_PATHS),
        st.integers(min_value=2001, max_value=6000).map(lambda n: "x" * n),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
        max_leaves=5,
    )


def _from_schema(name: str, schema: dict[str, Any], handles: list[str]) -> st.SearchStrategy[Any]:
    """Values a property's JSON schema allows (or nearly: edges included)."""
    if "anyOf" in schema:
        return st.one_of([_from_schema(name, option, handles) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.one_of(st.integers(min_value=low, max_value=high), st.sampled_from([v for v in (low, high) if v]))
    if kind == "number":
        return st.floats(min_value=schema.get("minimum"), max_value=schema.get("maximum"), allow_nan=False)
    if kind == "array":
        items = _from_schema(name, schema["items"], handles)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=schema.get("maxItems", 6))
    if kind == "string":
        if schema.get("pattern") == HANDLE_PATTERN:
            return st.one_of(st.sampled_from(handles), st.from_regex(re.compile(r"img_[0-9a-f]{24}"), fullmatch=True))
        if name == "data":
            return st.one_of(
                st.sampled_from(_FILES).map(lambda data: base64.b64encode(data).decode()),
                st.binary(max_size=64).map(lambda data: base64.b64encode(data).decode()),
                st.text(min_size=1, max_size=40),
            )
        text = st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 60), 60))
        return st.one_of(st.sampled_from(_PROMPTS), text, st.just(" \n\t"))
    raise AssertionError(f"no strategy for {name}: {schema}")


def _valid(tool: str, handles: list[str]) -> dict[str, Any]:
    """One call of ``tool`` the synthetic back end carries out."""
    return {
        "text_to_image": GOOD,
        "edit_image": {"image": handles[0], "instruction": "make the dog blue"},
        "reference_to_image": {**GOOD, "references": [handles[0]]},
        "inspect_image": {"image": handles[0]},
        "upload_image": {"data": base64.b64encode(_encoded("PNG")).decode()},
    }[tool]


def _arguments(schema: dict[str, Any], handles: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Argument dicts: schema-valid ones, and messy ones (each property valid, junk or missing,
    plus up to two extra keys)."""
    junk = _junk()
    required = set(schema.get("required", []))
    # Strategies are built once here, not per example: building them is most of the cost.
    valid = {
        name: st.tuples(st.just(name), _from_schema(name, sub, handles)) for name, sub in schema["properties"].items()
    }
    clean = st.tuples(*(pair if name in required else st.one_of(pair, st.none()) for name, pair in valid.items()))
    messy = st.tuples(
        *(st.one_of(pair, pair, st.tuples(st.just(name), junk), st.none()) for name, pair in valid.items())
    )
    extra_names = st.one_of(st.text(max_size=12), st.sampled_from(("path", "file", "__proto__", "../x", "")))
    extras = st.dictionaries(extra_names, junk, max_size=2)

    def combine(drawn: tuple[list[tuple[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        pairs, more = drawn
        arguments = dict(pair for pair in pairs if pair is not None)
        for name, value in more.items():
            arguments.setdefault(name, value)
        return arguments

    return st.one_of(
        st.tuples(clean.map(list), st.just({})).map(combine),
        st.tuples(messy.map(list), extras).map(combine),
    )


def _tree(root: Path, skip: Path | None = None) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if skip is None or not path.is_relative_to(skip)}


async def _bounded(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    with anyio.fail_after(20):
        return await client.call_tool(tool, arguments)


async def _list_schema(client: Client, tool: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        listed = {item.name: item.input_schema for item in (await client.list_tools()).tools}
    return listed[tool]


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as running:
        yield running


@pytest.mark.parametrize("tool", TOOLS)
def test_generated_arguments_never_break_the_server(
    tool: str, tmp_path: Path, portal: BlockingPortal, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    # A relative-path write would land in the working directory: make it one we can watch.
    monkeypatch.chdir(workdir)
    store = tmp_path / "store"
    server_settings = ServerSettings(
        store_root=store, max_width=512, max_height=512, max_pixels=256 * 256, max_decoded_pixels=512 * 512
    )
    client = Client(build_server(server_settings))
    with portal.wrap_async_context_manager(client):
        made = [portal.call(_bounded, client, "text_to_image", {**GOOD, "seed": seed}) for seed in range(3)]
        handles = [str(result.structured_content["handle"]) for result in made if result.structured_content]
        assert len(handles) == 3
        schema = portal.call(_list_schema, client, tool)
        before = _tree(tmp_path, skip=store)
        outcomes = {"ok": 0, "error": 0}

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(arguments=_arguments(schema, handles))
        @example(arguments=_valid(tool, handles))
        def one_call(arguments: dict[str, Any]) -> None:
            result = portal.call(_bounded, client, tool, arguments)
            text = " ".join(block.text for block in result.content if isinstance(block, TextContent))
            if result.is_error:
                outcomes["error"] += 1
                assert text, arguments
                assert len(text) < 3000, text
                # An unexpected exception inside the server is a bug even when it is caught.
                assert "back end:" not in text, (arguments, text)
            else:
                outcomes["ok"] += 1
                assert result.structured_content is not None
                model = InspectResult if tool == "inspect_image" else ImageResult
                model.model_validate(result.structured_content)

        one_call()
        good = portal.call(_bounded, client, "text_to_image", GOOD)
        assert not good.is_error
    assert outcomes["ok"] + outcomes["error"] >= EXAMPLES
    assert outcomes["error"] > 0
    # The explicit valid call always runs, so the success path's checks run every time (the drawn examples
    # reach it only by chance: one run in a few hundred drew no edit_image call the back end could apply).
    if tool != "upload_image":  # an upload may be refused by its content: errors are enough
        assert outcomes["ok"] > 0
    # Nothing written outside the store: not in tmp, not in the working directory.
    assert _tree(tmp_path, skip=store) == before
    assert list(workdir.iterdir()) == []
    assert os.getcwd() == str(workdir)
    # Images, and the server's own journal of write-behind recipes (never a name a caller chose).
    for path in (p for p in store.rglob("*") if p.is_file()):
        journal = path.parent == store / JOURNAL_DIR and re.fullmatch(r"\d+-[0-9a-f]{8}\.jsonl", path.name)
        assert journal or (path.suffix == ".png" and path.name.startswith("img_")), path
