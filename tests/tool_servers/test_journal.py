"""Write-behind loses nothing to a kill: a journaled recipe makes an unwritten image again.

A real server process answers calls whose PNG writes never reach the disk (the one injected
fault: a disk that never takes them) and is killed with SIGKILL; a fresh server process over the
same store is then asked for those handles over stdio.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import BlobResourceContents, CallToolResult, TextResourceContents
from PIL import Image

from visioncreator.tool_servers import ServerSettings, build_server
from visioncreator.tool_servers import writes as writes_module
from visioncreator.tool_servers.backend import Generated
from visioncreator.tool_servers.decode import decode_image
from visioncreator.tool_servers.journal import JOURNAL_DIR, RecipeJournal
from visioncreator.tool_servers.scene import GroundTruth
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend

PROMPT = "two red apples left of a blue bench"
_KILLED_SERVER = """
import asyncio, json, os, signal, sys, threading
from pathlib import Path
from visioncreator.tool_servers import writes
writes.write_atomic = lambda *args: threading.Event().wait()  # a disk that never takes a write
from mcp import Client
from visioncreator.tool_servers import ServerSettings, build_server

async def main():
    async with Client(build_server(ServerSettings(store_root=Path(sys.argv[1])))) as client:
        made = await client.call_tool("text_to_image", json.loads(sys.argv[2]))
        handle = made.structured_content["handle"]
        edit = {"image": handle, "instruction": "make the bench green", "seed": 6}
        edited = await client.call_tool("edit_image", edit)
        print(json.dumps([made.structured_content, edited.structured_content]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def _answered_then_killed(store: Path) -> list[dict[str, Any]]:
    """Handles a server answered (write-behind, the default) and was killed before writing."""
    args = {"prompt": PROMPT, "width": 96, "height": 64, "seed": 5}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_SERVER, str(store), json.dumps(args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    assert [a["bytes"] for a in answers] == [None, None]  # answered before the file
    assert not list(store.glob("*/*.png")), "the held writes reached the disk"
    assert len(list((store / JOURNAL_DIR).glob("*.jsonl"))) == 1
    return answers


def _stdio(store: Path, *flags: str) -> Client:
    return Client(
        StdioServerParameters(
            command=sys.executable, args=["-m", "visioncreator.tool_servers", "--store", str(store), *flags]
        )
    )


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    with anyio.fail_after(30):
        return await client.call_tool(tool, arguments)


async def test_a_killed_servers_unwritten_images_are_made_again_by_the_next_server(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made, edited = _answered_then_killed(store)
    async with _stdio(store) as client:
        # The edit's source was lost too: it is made first, then the edit, each to its own handle.
        seen = await _call(client, "inspect_image", {"image": edited["handle"], "questions": []})
        assert not seen.is_error, seen
        assert seen.structured_content is not None
        assert seen.structured_content["known"] is True
        with anyio.fail_after(30):
            blob = (await client.read_resource(f"image://{made['handle']}")).contents[0]
            truth = (await client.read_resource(f"truth://{made['handle']}")).contents[0]
    assert isinstance(blob, BlobResourceContents)
    assert isinstance(truth, TextResourceContents)
    assert decode_image(base64.b64decode(blob.blob), max_bytes=1 << 24, max_pixels=1 << 24).size == (96, 64)
    truth_of = GroundTruth.model_validate_json(truth.text)
    assert (truth_of.seed, truth_of.prompt) == (5, PROMPT)
    assert ImageStore(store).exists(made["handle"])
    assert ImageStore(store).exists(edited["handle"])
    # The dead server's journal goes once a new journal finds every image it names stored.
    async with _stdio(store) as client:
        again = await _call(client, "text_to_image", {"prompt": "a green dog", "seed": 1})
        assert not again.is_error
    assert not list((store / JOURNAL_DIR).glob("*.jsonl")), "the journals outlived their writes"


async def test_without_a_recipe_a_lost_handle_is_still_unknown(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made, _ = _answered_then_killed(store)
    for journal in (store / JOURNAL_DIR).glob("*.jsonl"):
        journal.unlink()
    async with _stdio(store) as client:
        seen = await _call(client, "inspect_image", {"image": made["handle"], "questions": []})
        assert seen.is_error
        assert made["handle"] in seen.content[0].text  # type: ignore[union-attr]


class _Drifting(SyntheticBackend):
    """Fault injection: a back end whose second drawing of a prompt differs from the first."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def text_to_image(self, args: Any) -> Generated:
        self.calls += 1
        made = await super().text_to_image(args)
        if self.calls > 1:
            made.image.putpixel((0, 0), (1, 2, 3))
        return made


async def test_a_remake_with_other_pixels_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()

    def lost(*args: object) -> None:  # a write that never reaches the disk
        entered.set()
        release.wait(10)

    monkeypatch.setattr(writes_module, "write_atomic", lost)
    settings = ServerSettings(store_root=tmp_path / "store")
    backend = _Drifting()
    killed = build_server(settings, backend=backend)
    monkeypatch.setattr(killed._runner, "settle", lambda: None)  # type: ignore[attr-defined]  # a killed server never settles
    async with Client(killed) as client:
        made = await _call(client, "text_to_image", {"prompt": PROMPT, "seed": 2})
        handle = made.structured_content["handle"]  # type: ignore[index]
    assert entered.wait(10)
    writes_module.pending_writes._pending.clear()  # what a killed server forgets
    release.set()
    fresh = build_server(settings, backend=backend)
    async with Client(fresh) as client:
        seen = await _call(client, "inspect_image", {"image": handle, "questions": []})
    assert seen.is_error
    assert backend.calls == 2
    assert not ImageStore(tmp_path / "store").exists(handle)


async def test_write_behind_answers_first_and_a_clean_exit_leaves_no_journal(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with _stdio(store) as client:
        made = await _call(client, "text_to_image", {"prompt": PROMPT, "seed": 3})
        assert made.structured_content is not None
        assert made.structured_content["bytes"] is None
        assert len(list((store / JOURNAL_DIR).glob("*.jsonl"))) == 1
    assert ImageStore(store).exists(made.structured_content["handle"])
    assert not list((store / JOURNAL_DIR).glob("*.jsonl"))
    # Off (the diffusion back ends' default): the answer waits for the file and journals nothing.
    async with _stdio(store, "--no-write-behind") as client:
        made = await _call(client, "text_to_image", {"prompt": PROMPT, "seed": 4})
        assert made.structured_content is not None
        assert made.structured_content["bytes"] > 0
    assert not list((store / JOURNAL_DIR).glob("*.jsonl"))


async def test_an_in_process_session_ends_with_its_images_on_disk_and_no_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The RL collector's in-process server: its owner may remove the store as soon as the session ends.
    # Writes failing meanwhile in another store (earlier tests remove theirs) must not keep this journal.
    other = ImageStore(tmp_path / "other")
    monkeypatch.setattr(writes_module, "write_atomic", _failing_in(other.root, writes_module.write_atomic))
    store = tmp_path / "store"
    async with Client(build_server(ServerSettings(store_root=store))) as client:
        made = [await _call(client, "text_to_image", {"prompt": PROMPT, "seed": seed}) for seed in range(6)]
        assert all(m.structured_content and m.structured_content["bytes"] is None for m in made)
        assert len(list((store / JOURNAL_DIR).glob("*.jsonl"))) == 1
        failed = writes_module.pending_writes.failed
        other.put_behind(Image.new("RGB", (8, 8)), None)
        other.flush(10)
        assert writes_module.pending_writes.failed == failed + 1
    assert not list((store / JOURNAL_DIR).glob("*.jsonl"))
    for m in made:
        assert m.structured_content is not None
        assert ImageStore(store).path_of(m.structured_content["handle"]).is_file()


def _failing_in(root: Path, write: Any) -> Any:
    def maybe(path: Path, data: bytes, into: Path) -> None:
        if Path(into) == root:
            raise OSError("disk full (injected)")
        write(path, data, into)

    return maybe


def test_settings_resolve_write_behind_by_back_end() -> None:
    assert ServerSettings().writes_behind is True
    assert ServerSettings(backend="tiny").writes_behind is False
    assert ServerSettings(backend="diffusers", write_behind=True).writes_behind is True
    assert ServerSettings(write_behind=False).writes_behind is False


def test_a_full_journal_starts_afresh_and_the_old_one_goes_after_its_writes(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    journal = RecipeJournal(store.root, store.exists, max_bytes=200)
    for seed in range(3):
        journal.record(f"img_{seed:024x}", "text_to_image", {"prompt": "x" * 80, "seed": seed})
    _drain()
    left = list((store.root / JOURNAL_DIR).glob("*.jsonl"))
    assert len(left) == 1  # the two full ones went once the writer reached them
    assert journal.find("img_" + "2".rjust(24, "0")) is not None
    assert journal.find("img_" + "0".rjust(24, "0")) is None
    journal.close()
    _drain()
    assert not list((store.root / JOURNAL_DIR).glob("*.jsonl"))
    assert os.path.isdir(store.root / JOURNAL_DIR)


def _drain() -> None:
    """Wait until the writer thread has run every job queued so far."""
    done = threading.Event()
    writes_module.pending_writes.after(done.set)
    assert done.wait(10)
