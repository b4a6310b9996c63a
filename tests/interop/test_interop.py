"""MCP clients we did not write, against a real tool server process over stdio and streamable HTTP.

The clients are the official TypeScript SDK (``ts_client.mjs``, run by node) and the Python SDK's
1.x line with ``langchain-mcp-adapters`` (``py1_client.py``, run by ``.venv-mcp1``'s interpreter).
Each makes the same image and reads it back; the results must equal what our own mcp 2.x client
gets from an in-process server, field for field. Each also reports the server's version and the
new image's resource link; the TypeScript client checks the rest of what a host reads (tool titles
and annotations, closed input schemas, an unknown argument refused by name, no prompts capability,
the image in ``resources/list``). The clients are installed by
``.ci/interop-setup.sh``; without them these tests fail (they do not skip) so CI cannot pass
without running them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MCP1_PYTHON = REPO / ".venv-mcp1" / "bin" / "python"
SETUP_HINT = "run .ci/interop-setup.sh (it installs the interop clients)"
TOKEN = "interop-token-0123456789abcdef"
IMAGE_TOOLS = {"text_to_image", "edit_image", "reference_to_image", "inspect_image"}
# What both client scripts send; they bound themselves at 25 s, so their own message comes first.
MAKE = {"prompt": "three red apples on a white table", "width": 256, "height": 256, "seed": 1}
QUESTIONS = ["how many apples?"]
CLIENT_TIMEOUT_S = 30.0
STARTUP_S = 20.0
# The newest handshake-era protocol version: the pinned clients' latest, which the server accepts.
PROTOCOL_VERSION = "2025-11-25"


def _without_timing(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "generator_s"}


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What our own client gets from an in-process server for the same calls (timings dropped)."""
    settings = ServerSettings(store_root=tmp_path_factory.mktemp("reference") / "store")

    async def reference() -> dict[str, Any]:
        with anyio.fail_after(20):
            async with Client(build_server(settings)) as client:
                made = await client.call_tool("text_to_image", MAKE)
                assert made.structured_content is not None
                handle = made.structured_content["handle"]
                inspected = await client.call_tool("inspect_image", {"image": handle, "questions": QUESTIONS})
                assert inspected.structured_content is not None
        return {"made": made.structured_content, "inspected": inspected.structured_content}

    found = anyio.run(reference)
    return {key: _without_timing(value) for key, value in found.items()}


def _node() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH: install Node.js >= 20, then {SETUP_HINT}", pytrace=False)
    if not (HERE / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json").is_file():
        pytest.fail(
            f"@modelcontextprotocol/sdk is not installed in {HERE / 'node_modules'}: {SETUP_HINT}", pytrace=False
        )
    return [node, str(HERE / "ts_client.mjs")]


def _mcp1_python() -> list[str]:
    if not MCP1_PYTHON.is_file():
        pytest.fail(f"the mcp 1.x environment {MCP1_PYTHON.parent.parent} is missing: {SETUP_HINT}", pytrace=False)
    return [str(MCP1_PYTHON), str(HERE / "py1_client.py")]


def _pinned_ts_sdk() -> str:
    return str(json.loads((HERE / "package.json").read_text())["dependencies"]["@modelcontextprotocol/sdk"])


def _pinned(requirement: str) -> str:
    found = re.search(rf"^{re.escape(requirement)}==(\S+)$", (HERE / "requirements-mcp1.txt").read_text(), re.M)
    assert found is not None, requirement
    return found.group(1)


def _stdio_server(store: Path) -> list[str]:
    return [sys.executable, "-m", "visioncreator.tool_servers", "--store", str(store)]


def _run(command: list[str]) -> dict[str, Any]:
    """Run a client script to the end (killing its whole process group on timeout); parse its line."""
    process = subprocess.Popen(
        command,
        cwd=HERE,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        stdout, stderr = process.communicate(timeout=CLIENT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=10)
        pytest.fail(f"{command[1]} did not finish in {CLIENT_TIMEOUT_S:g} s:\n{stderr[-4000:]}")
    if process.returncode != 0:
        hint = f"\n(if a module or package is missing: {SETUP_HINT})"
        pytest.fail(f"{command[1]} exited with {process.returncode}:\n{stderr[-4000:]}{hint}")
    lines = stdout.strip().splitlines()
    assert lines, f"no result line; stderr:\n{stderr[-4000:]}"
    return dict(json.loads(lines[-1]))


def _check(line: dict[str, Any], expected: dict[str, Any]) -> None:
    """The common steps: handshake, tool list, the image made, read back as a PNG, inspected."""
    assert line["protocol_version"] == PROTOCOL_VERSION
    assert line["server"] == "visioncreator-tools"
    assert set(line["tools"]) >= IMAGE_TOOLS
    assert set(line["output_schemas"]) >= IMAGE_TOOLS
    made = line["made"]
    assert _without_timing(made) == expected["made"]
    assert re.fullmatch(r"img_[0-9a-f]{24}", made["handle"])
    # The server answers once the handle is known (write-behind): the file's size comes with the resource.
    resource = dict(line["resource"])
    assert made["bytes"] is None
    assert resource.pop("bytes") > 0
    assert resource == {"uri": f"image://{made['handle']}", "mime_type": "image/png", "width": 256, "height": 256}
    assert _without_timing(line["inspected"]) == expected["inspected"]


def _check_identity_and_link(line: dict[str, Any]) -> None:
    """The server's version, and the new image's resource link beside its handle."""
    assert line["server_version"] == version("visioncreator")
    handle = line["made"]["handle"]
    assert line["made_links"] == [{"uri": f"image://{handle}", "name": handle, "mime_type": "image/png"}]


def _check_new_fields(line: dict[str, Any]) -> None:
    """What a host reads beyond the results: identity, titles, hints, links, refusals, listings."""
    _check_identity_and_link(line)
    assert line["prompts_advertised"] is False
    assert all(line["titles"][name] for name in IMAGE_TOOLS | {"upload_image"})
    assert line["titles"]["text_to_image"] == "Text to image"
    hints = line["annotations"]
    assert hints["inspect_image"] == {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False}
    assert hints["text_to_image"] == {
        "readOnlyHint": False,
        "destructiveHint": False,
        "idempotentHint": False,
        "openWorldHint": False,
    }
    assert set(line["closed_schemas"]) >= IMAGE_TOOLS
    handle = line["made"]["handle"]
    assert line["refused"]["is_error"] is True
    assert "'sed' (did you mean 'seed'?)" in line["refused"]["text"]
    assert "'color'" in line["refused"]["text"]
    assert f"image://{handle}" in line["listed"]


def _check_langchain(line: dict[str, Any], expected: dict[str, Any]) -> None:
    langchain = line["langchain"]
    assert set(langchain["tools"]) >= IMAGE_TOOLS
    assert _without_timing(langchain["made"]) == expected["made"]
    # The model-facing content is the text block with the same JSON.
    texts = [block["text"] for block in langchain["content"] if block["type"] == "text"]
    assert [_without_timing(json.loads(text)) for text in texts] == [expected["made"]]
    # The adapters turn the resource link into an image block by URL (image://, which only an MCP
    # client can read): a host that forwards tool images to a hosted model should drop or fetch it.
    images = [block for block in langchain["content"] if block["type"] == "image"]
    assert [block.get("url") for block in images] == [f"image://{langchain['made']['handle']}"]


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One HTTP server with a bearer token for the module, on a port the OS picks."""
    root = tmp_path_factory.mktemp("http")
    log_path = root / "stderr.log"
    command = [sys.executable, "-m", "visioncreator.tool_servers", "--transport", "http", "--port", "0"]
    command += ["--store", str(root / "store"), "--token", TOKEN]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + STARTUP_S
        while (found := re.search(r"listening on (http://\S+)", log_path.read_text())) is None:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not start: " + log_path.read_text()
            time.sleep(0.05)
        yield found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_typescript_sdk_over_stdio(tmp_path: Path, expected: dict[str, Any]) -> None:
    store = tmp_path / "store"
    line = _run([*_node(), "stdio", *_stdio_server(store)])
    assert line["client_version"] == _pinned_ts_sdk(), SETUP_HINT
    _check(line, expected)
    _check_new_fields(line)
    # The client started our server with our arguments: the image is in the store it was given.
    assert [path.name for path in store.rglob("img_*.png")] == [f"{line['made']['handle']}.png"]


def test_typescript_sdk_over_http(http_url: str, expected: dict[str, Any]) -> None:
    line = _run([*_node(), "http", http_url, TOKEN])
    assert line["client_version"] == _pinned_ts_sdk(), SETUP_HINT
    _check(line, expected)
    _check_new_fields(line)


def test_mcp1_and_langchain_over_stdio(tmp_path: Path, expected: dict[str, Any]) -> None:
    store = tmp_path / "store"
    line = _run([*_mcp1_python(), "stdio", *_stdio_server(store)])
    assert line["client_version"] == _pinned("mcp"), SETUP_HINT
    assert line["client_version"].startswith("1.")
    assert line["adapters_version"] == _pinned("langchain-mcp-adapters"), SETUP_HINT
    _check(line, expected)
    _check_identity_and_link(line)
    _check_langchain(line, expected)
    assert [path.name for path in store.rglob("img_*.png")] == [f"{line['made']['handle']}.png"]


def test_mcp1_and_langchain_over_http(http_url: str, expected: dict[str, Any]) -> None:
    line = _run([*_mcp1_python(), "http", http_url, TOKEN])
    assert line["client_version"] == _pinned("mcp"), SETUP_HINT
    _check(line, expected)
    _check_identity_and_link(line)
    _check_langchain(line, expected)
