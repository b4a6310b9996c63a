"""The server's MCP surface as any client sees it on the wire, whichever SDK major serves it.

A real stdio server process is spoken to in plain JSON-RPC lines (no SDK on the client side), so
the same assertions hold under mcp 2.x (the project's test environment) and mcp 1.x (the shared
environment with langchain-mcp-adapters, ``.ci/mcp1-tests.txt``): identity and version, titles and
hints, a resource link per new image, a paged ``resources/list`` and no prompts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from visioncreator.tool_servers import SERVER_NAME

PROTOCOL = "2025-06-18"


class Wire:
    """One stdio server process and the JSON-RPC lines exchanged with it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.next_id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, *, notify: bool = False) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        if not notify:
            self.next_id += 1
            message["id"] = self.next_id
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def ask(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.send(method, params)
        assert self.proc.stdout is not None
        while True:  # skip notifications (logging) until the answer to this request
            line = self.proc.stdout.readline()
            assert line, f"the server closed its output while answering {method}"
            answer = json.loads(line)
            if answer.get("id") == self.next_id:
                return dict(answer)


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[tuple[Wire, dict[str, Any]]]:
    command = [sys.executable, "-m", "visioncreator.tool_servers", "--store", str(tmp_path / "store")]
    proc = subprocess.Popen(
        [*command, "--resource-page-size", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        w = Wire(proc)
        init = w.ask(
            "initialize",
            {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "wire-test", "version": "0"}},
        )
        w.send("notifications/initialized", notify=True)
        yield w, init["result"]
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.mark.timeout(60)
def test_identity_titles_hints_links_listing_and_no_prompts(wire: tuple[Wire, dict[str, Any]]) -> None:
    w, init = wire
    assert init["serverInfo"]["name"] == SERVER_NAME
    assert init["serverInfo"]["version"] == version("visioncreator")
    assert "resources" in init["capabilities"]
    assert "prompts" not in init["capabilities"]

    tools = {t["name"]: t for t in w.ask("tools/list")["result"]["tools"]}
    assert all(t.get("title") for t in tools.values()), tools
    assert tools["inspect_image"]["annotations"]["readOnlyHint"] is True
    assert tools["text_to_image"]["annotations"]["readOnlyHint"] is False
    assert tools["text_to_image"]["annotations"]["destructiveHint"] is False
    assert tools["text_to_image"]["inputSchema"]["additionalProperties"] is False

    handles = []
    for seed in range(3):
        arguments = {"prompt": "a red car", "width": 64, "height": 64, "seed": seed}
        result = w.ask("tools/call", {"name": "text_to_image", "arguments": arguments})["result"]
        assert not result.get("isError"), result
        handle = result["structuredContent"]["handle"]
        links = [c for c in result["content"] if c["type"] == "resource_link"]
        assert [link["uri"] for link in links] == [f"image://{handle}"]
        assert links[0]["mimeType"] == "image/png"
        handles.append(handle)

    refused = w.ask("tools/call", {"name": "text_to_image", "arguments": {"prompt": "a cat", "sed": 1}})["result"]
    assert refused["isError"] is True
    assert "sed" in refused["content"][0]["text"]

    listed: list[str] = []
    cursor = None
    for _ in range(5):
        page = w.ask("resources/list", {"cursor": cursor} if cursor else {})["result"]
        assert len(page["resources"]) <= 2
        listed += [r["uri"] for r in page["resources"]]
        cursor = page.get("nextCursor")
        if not cursor:
            break
    assert sorted(listed) == sorted(f"image://{h}" for h in handles)
    assert "error" in w.ask("prompts/list")
