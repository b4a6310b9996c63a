"""The tools' public contract, pinned: names, titles, order, descriptions (the text models read), annotations, schemas.

A change to any of them fails here with a diff. When the change is intended, regenerate with
``VISIONCREATOR_UPDATE_SNAPSHOTS=1 pytest tests/tool_servers/test_snapshot.py`` and review the
diff of ``snapshots/tools.json`` like code.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

SNAPSHOT = Path(__file__).parent / "snapshots" / "tools.json"
UPDATE_ENV = "VISIONCREATOR_UPDATE_SNAPSHOTS"


async def _listed(client: Client) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        tools = (await client.list_tools()).tools
    return [
        {
            "name": tool.name,
            "title": tool.title,
            "description": tool.description,
            "annotations": None if tool.annotations is None else tool.annotations.model_dump(exclude_none=True),
            "input_schema": tool.input_schema,
            "output_schema": tool.output_schema,
        }
        for tool in tools
    ]


def _render(tools: list[dict[str, Any]]) -> str:
    return json.dumps(tools, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


async def test_tools_match_the_snapshot(tmp_path: Path) -> None:
    async with Client(build_server(ServerSettings(store_root=tmp_path / "store"))) as client:
        current = _render(await _listed(client))
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
    if not SNAPSHOT.exists():
        pytest.fail(f"no snapshot at {SNAPSHOT}: run with {UPDATE_ENV}=1 to write it")
    pinned = SNAPSHOT.read_text(encoding="utf-8")
    if current != pinned:
        diff = "".join(
            difflib.unified_diff(
                pinned.splitlines(keepends=True),
                current.splitlines(keepends=True),
                fromfile="snapshots/tools.json (pinned)",
                tofile="tools/list (now)",
            )
        )
        pytest.fail(
            f"the tools' public contract changed; if intended, rerun with {UPDATE_ENV}=1 and review:\n{diff}",
            pytrace=False,
        )


async def test_list_order_is_stable_across_calls_and_instances(tmp_path: Path) -> None:
    orders: list[list[str]] = []
    for instance in range(2):
        async with Client(build_server(ServerSettings(store_root=tmp_path / f"store{instance}"))) as client:
            for _ in range(2):
                orders.append([tool["name"] for tool in await _listed(client)])
    assert orders[0] == ["text_to_image", "edit_image", "reference_to_image", "inspect_image", "upload_image"]
    assert all(order == orders[0] for order in orders)
