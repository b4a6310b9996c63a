"""Recipes of images answered before their files were written: what makes them again after a kill.

With write-behind a tool call answers once its image's handle is known, and the PNG follows on
the writer thread a few milliseconds later. A server killed in between would have answered a
handle whose file never came. So, before it answers, the server appends the call's *recipe* (the
tool, its arguments with the resolved seed, the handle) to a journal file of its own: one short
``write`` to an ``O_APPEND`` file, no encode and no ``fsync``. The kernel keeps it through a kill
of the process (not through a power loss; neither does it keep an unsynced PNG).

A server of the same store that misses a handle looks for its recipe in every journal and makes
the image again (:meth:`visioncreator.tool_servers.tools.ToolRunner.recover`). A deterministic
back end (the synthetic one) gives the very pixels, hence the very handle; any other result is
refused, and the handle stays unknown as before.

Each journal is locked (``flock``) by its server for the server's life, so a journal whose lock
can be taken belongs to a server that is gone. A journal is deleted once every write it covers
is on disk: its own at a clean exit and when it grows past ``max_bytes`` (then a fresh one
starts), a dead server's when a new journal finds every image it names stored.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visioncreator.tool_servers.writes import pending_writes

__all__ = ["JOURNAL_DIR", "Recipe", "RecipeJournal"]

JOURNAL_DIR = ".journal"
"""The journals' directory inside the store's root."""
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Recipe:
    """How one image was made: the tool and its arguments (seed resolved), and the handle it gave."""

    handle: str
    tool: str
    arguments: dict[str, Any]


class RecipeJournal:
    """This server's journal of write-behind recipes, and the lookup over every journal of the store.

    Args:
        root: The store's root; journals live in its ``.journal`` directory.
        exists: Whether the store holds a handle's file (a dead journal naming only stored
            images is deleted).
        max_bytes: Size past which this server starts a fresh journal (the old one goes once
            the writes it covers are on disk).

    """

    def __init__(self, root: Path, exists: Callable[[str], bool], *, max_bytes: int = 4 << 20) -> None:
        self.root = Path(root)
        self.directory = self.root / JOURNAL_DIR
        self.max_bytes = max_bytes
        self._exists = exists
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._failures = 0
        self._lock = threading.Lock()
        # Each journal's recipes by handle, with the file size they were read at (re-read when it grew).
        self._index: dict[Path, tuple[int, dict[str, Recipe]]] = {}

    def record(self, handle: str, tool: str, arguments: dict[str, Any]) -> None:
        """Append one recipe before its handle is answered (a few microseconds: one ``write``)."""
        line = json.dumps({"handle": handle, "tool": tool, "arguments": arguments}, separators=(",", ":"))
        data = line.encode() + b"\n"
        with self._lock:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            os.write(self._fd, data)
            self._size += len(data)
            if self._size >= self.max_bytes:
                self._retire_current()

    def find(self, handle: str) -> Recipe | None:
        """The latest recipe of ``handle`` in any journal of the store (this server's included)."""
        try:
            paths = sorted(self.directory.glob("*.jsonl"), key=_mtime)
        except FileNotFoundError:
            return None
        found = None
        index = {}
        for path in paths:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            known = self._index.get(path)
            if known is None or known[0] != size:
                known = (size, {recipe.handle: recipe for recipe in _read(path)})
            index[path] = known
            found = known[1].get(handle, found)
        self._index = index
        return found

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sweep()
        path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self._path is None:
            atexit.register(self.close)
        self._fd, self._path, self._size = fd, path, 0
        self._failures = pending_writes.failed_under(self.root)

    def _retire_current(self) -> threading.Event | None:
        """Hand the current journal to the writer thread: deleted after every write queued before it."""
        fd, path, failures = self._fd, self._path, self._failures
        self._fd = None
        if fd is not None and path is not None:
            return pending_writes.after(lambda: _retire(fd, path, self.root, failures))
        return None

    def close(self) -> threading.Event | None:
        """Delete this server's journal once its pending writes are on disk (kept if one failed).

        Returns what is set once that is done (None: no journal was open).
        """
        with self._lock:
            return self._retire_current()

    def _sweep(self) -> None:
        """Delete journals of servers that are gone when every image they name is stored."""
        for path in self.directory.glob("*.jsonl"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live server's
                if all(self._exists(recipe.handle) for recipe in _read(path)):
                    path.unlink(missing_ok=True)
            finally:
                os.close(fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _retire(fd: int, path: Path, root: Path, failures: int) -> None:
    try:
        if pending_writes.failed_under(root) > failures:
            _log.warning("kept journal %s: an image write failed, its recipe can make it again", path.name)
        else:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _read(path: Path) -> list[Recipe]:
    """The recipes of one journal; a torn last line (a kill mid-write) or a foreign line is skipped."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    recipes = []
    for line in lines:
        try:
            entry = json.loads(line)
            recipes.append(Recipe(str(entry["handle"]), str(entry["tool"]), dict(entry["arguments"])))
        except (ValueError, KeyError, TypeError):
            continue
    return recipes
