"""The store's images, listed a page at a time in handle order (``resources/list``).

The cursor is the last handle of the previous page: a page is the next ``limit`` handles after
it, so images stored while a client pages through appear on a later page or not at all, never
twice. A page reads only the shard directories it needs (a store is 256 of them, by the first
two hex digits of the handle), so a large store costs a page no more than its own shards.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from visioncreator.tool_servers.schemas import HANDLE_PATTERN
from visioncreator.tool_servers.writes import pending_writes

__all__ = ["ListedImage", "list_images"]

_HANDLE = re.compile(HANDLE_PATTERN)
_SHARD = re.compile(r"^[0-9a-f]{2}$")


@dataclass(frozen=True, slots=True)
class ListedImage:
    """One stored image of a listing page."""

    handle: str
    bytes: int | None
    """Size of the PNG file; ``None`` while this process is still writing it."""


def list_images(root: Path, after: str | None, limit: int) -> tuple[list[ListedImage], bool]:
    """The stored images with handles after ``after``, at most ``limit``, in handle order.

    Args:
        root: The store's root directory.
        after: The last handle of the previous page; ``None`` for the first page.
        limit: The page size.

    Returns:
        The page, and whether more images follow it.

    """
    start = after[4:6] if after else ""
    pending: dict[str, list[str]] = {}
    for path in pending_writes.paths():
        if path.parent.parent == root:
            pending.setdefault(path.parent.name, []).append(path.stem)
    shards = set(pending)
    with os.scandir(root) as entries:
        # A shard replaced by a link is never read by the store, so it is not listed either.
        shards.update(e.name for e in entries if _SHARD.fullmatch(e.name) and e.is_dir(follow_symlinks=False))
    found: list[ListedImage] = []
    for shard in sorted(s for s in shards if s >= start):
        found.extend(_shard_images(root / shard, shard, pending.get(shard, []), after))
        if len(found) > limit:
            break
    return found[:limit], len(found) > limit


def _shard_images(directory: Path, shard: str, pending: list[str], after: str | None) -> list[ListedImage]:
    images = {handle: ListedImage(handle, None) for handle in pending}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                handle = entry.name[:-4]
                named = entry.name.endswith(".png") and _HANDLE.fullmatch(handle) and handle[4:6] == shard
                # Regular files only: the store refuses to read a link.
                if named and entry.is_file(follow_symlinks=False):
                    images[handle] = ListedImage(handle, entry.stat(follow_symlinks=False).st_size)
    except FileNotFoundError:
        pass  # only pending images so far: the writer thread makes the directory
    return [images[handle] for handle in sorted(images) if after is None or handle > after]
