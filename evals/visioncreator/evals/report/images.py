"""Where a report finds a run's images: paths relative to the page, and thumbnails made once."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from visioncreator.graph import inside
from visioncreator.tool_servers import ImageStore, ToolServerError

__all__ = ["STORE_DIR", "THUMBS_DIR", "ImageRef", "image_refs"]

THUMBS_DIR = "thumbs"
STORE_DIR = "store"
THUMB_SIZE = 192
"""Longest side of a thumbnail, in pixels."""


class ImageRef(BaseModel):
    """Where the report finds one image, as paths relative to the page (``None``: not on disk)."""

    model_config = ConfigDict(extra="forbid")

    handle: str
    full: str | None = None
    thumb: str | None = None


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive (Windows): only an absolute URI reaches it
        return path.resolve().as_uri()


def image_refs(
    run_dir: str | Path,
    handles: Iterable[str],
    *,
    page_dir: str | Path | None = None,
    thumbs_dir: str | Path | None = None,
) -> dict[str, ImageRef]:
    """Locate (and thumbnail, once) the stored images of a run.

    Args:
        run_dir: The run folder; its images are under ``store/``.
        handles: The image handles wanted.
        page_dir: Folder of the page that shows them (default ``run_dir``): paths are relative to it.
        thumbs_dir: Where thumbnails go (default ``run_dir/thumbs``); an existing one is reused.

    Returns:
        Handle -> its paths; both ``None`` for a handle the store does not hold.

    """
    run = Path(run_dir)
    page = Path(page_dir) if page_dir is not None else run
    thumbs = Path(thumbs_dir) if thumbs_dir is not None else run / THUMBS_DIR
    store = ImageStore(run / STORE_DIR) if (run / STORE_DIR).is_dir() else None
    refs: dict[str, ImageRef] = {}
    for handle in dict.fromkeys(handles):
        ref = ImageRef(handle=handle)
        try:
            path = store.path_of(handle) if store is not None else None
        except ToolServerError:  # a malformed handle in a record: show it as missing
            path = None
        if store is not None and path is not None and path.is_file():
            ref.full = _relative(path, page)
            inside(thumbs, f"{handle}.png")  # path_of checked the handle; a file name from a record stays in thumbs
            thumb = thumbs / f"{handle}.png"
            if not thumb.exists():
                _make_thumbnail(store, handle, thumb)
            ref.thumb = _relative(thumb, page) if thumb.exists() else ref.full
        refs[handle] = ref
    return refs


def _make_thumbnail(store: ImageStore, handle: str, out: Path) -> None:
    try:
        _, image = store.load(handle)
    except ToolServerError:  # a damaged store file: the page links the original, which shows as broken
        return
    image.thumbnail((THUMB_SIZE, THUMB_SIZE))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp")  # two reports of one run may race
    image.save(tmp, format="PNG")
    tmp.replace(out)
