"""A spawned stdio server inherits ``PYTHONPATH``: code importable by the client is importable by it.

The MCP SDK gives a child process only a handful of variables (HOME, PATH, ...). A server
module that is importable only through ``PYTHONPATH`` (a source tree, an unpacked wheel
bundle on a machine without an index) must still start.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from visioncreator.graph import ToolClient, ToolServerSpec

SERVER = '''
try:
    from mcp.server.mcpserver import MCPServer
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer

server = MCPServer("echo")


@server.tool()
def where() -> str:
    """Which module file answered."""
    return __file__


if __name__ == "__main__":
    server.run()
'''


async def test_spawned_server_finds_modules_on_the_parents_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "only_on_pythonpath_server.py").write_text(SERVER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    spec = ToolServerSpec(command=sys.executable, args=("-m", "only_on_pythonpath_server"), connect_timeout_s=60.0)
    async with ToolClient(spec=spec) as tools:
        outcome = await tools.call("where", {})
    assert outcome.ok, outcome.error
    assert "only_on_pythonpath_server.py" in str(outcome.structured)


async def test_a_store_given_as_a_path_is_passed_as_text_and_the_server_stores_there(tmp_path: Path) -> None:
    spec = ToolServerSpec.synthetic(store=tmp_path / "store")
    assert spec.args[spec.args.index("--store") + 1] == str(tmp_path / "store")
    async with ToolClient(spec=spec) as tools:
        made = await tools.call("text_to_image", {"prompt": "a red apple", "width": 64, "height": 64, "seed": 1})
        assert made.ok, made.error
    assert any((tmp_path / "store").rglob("*.png"))
