"""Images a killed server answered but never wrote, made again from their journal recipes.

See :mod:`visioncreator.tool_servers.journal` for the journal. A recipe is run again through the
same back end with the recorded arguments; its image counts only when it gets the very handle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import anyio
import anyio.to_thread
from pydantic import ValidationError

from visioncreator.tool_servers.backend import Generated, ImageBackend, SourceImage
from visioncreator.tool_servers.errors import ToolServerError, UnknownHandleError
from visioncreator.tool_servers.journal import Recipe, RecipeJournal
from visioncreator.tool_servers.mcp_compat import ToolError
from visioncreator.tool_servers.names import ToolName
from visioncreator.tool_servers.schemas import EditImageInput, ReferenceToImageInput, TextToImageInput
from visioncreator.tool_servers.store import ImageStore

__all__ = ["recover"]

_log = logging.getLogger("visioncreator.tool_servers.server")


class ToolRunner(Protocol):
    """What a recovery needs of the tool runner: its store, journal and back end, and its sources."""

    store: ImageStore
    journal: RecipeJournal
    backend: ImageBackend

    def sources(self, tool: str, handles: Sequence[str]) -> AbstractAsyncContextManager[list[SourceImage]]: ...


async def recover(tools: ToolRunner, handle: str) -> bool:
    """Make a lost image again from its journal recipe: one a killed server answered but never wrote.

    The image is made with the recorded arguments (seed included) and stored; it counts only
    when it gets the very handle (a deterministic back end), else the handle stays unknown.

    Returns:
        Whether the store holds ``handle`` now.

    """
    try:
        if tools.store.exists(handle):
            return True
        tools.store.path_of(handle)  # a malformed handle has no recipe to look for
    except UnknownHandleError:
        return False
    recipe = await anyio.to_thread.run_sync(tools.journal.find, handle)
    if recipe is None:
        return False
    try:
        generated = await _remake(tools, recipe)
    except (ToolServerError, ToolError, ValidationError) as exc:
        _log.warning("could not make %s again from its recipe: %s", handle, exc)
        return False
    stored = await anyio.to_thread.run_sync(tools.store.put, generated.image, generated.truth)
    if stored.handle != handle:
        _log.warning("%s made again from its recipe came out as %s: the back end is not deterministic", handle,
                     stored.handle)  # fmt: skip
        return False
    _log.info("made %s again from its recipe (its server was gone before the file was written)", handle)
    return True


async def _remake(tools: ToolRunner, recipe: Recipe) -> Generated:
    """Run a recipe's back-end call again (its sources recovered first where they are lost too)."""
    if recipe.tool == ToolName.TEXT_TO_IMAGE:
        return await tools.backend.text_to_image(TextToImageInput.model_validate(recipe.arguments))
    if recipe.tool == ToolName.EDIT_IMAGE:
        edit = EditImageInput.model_validate(recipe.arguments)
        async with tools.sources(recipe.tool, [edit.image]) as sources:
            return await tools.backend.edit_image(edit, sources[0])
    if recipe.tool == ToolName.REFERENCE_TO_IMAGE:
        reference = ReferenceToImageInput.model_validate(recipe.arguments)
        async with tools.sources(recipe.tool, reference.references) as sources:
            return await tools.backend.reference_to_image(reference, sources)
    raise ToolError(f"a recipe names the tool {recipe.tool!r}, which makes no images")
