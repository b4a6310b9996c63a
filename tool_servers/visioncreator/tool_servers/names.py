"""The tools' names: the one vocabulary every package spells tool names with."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "IMAGE_TOOLS",
    "INSPECTION_META_KEY",
    "INTERNAL_TOOLS",
    "LOOK_META_KEY",
    "POLICY_TOOLS",
    "SERVER_NAME",
    "ToolName",
]

SERVER_NAME: Final = "visioncreator-tools"
"""The name the tool server gives in its MCP ``initialize`` answer."""


class ToolName(StrEnum):
    """A tool of the visioncreator tool server. Members are strings: ``ToolName.EDIT_IMAGE == "edit_image"``."""

    TEXT_TO_IMAGE = "text_to_image"
    EDIT_IMAGE = "edit_image"
    REFERENCE_TO_IMAGE = "reference_to_image"
    INSPECT_IMAGE = "inspect_image"
    UPLOAD_IMAGE = "upload_image"


IMAGE_TOOLS: Final[frozenset[str]] = frozenset(
    {ToolName.TEXT_TO_IMAGE, ToolName.EDIT_IMAGE, ToolName.REFERENCE_TO_IMAGE}
)
"""Tools that make a new image."""

POLICY_TOOLS: Final[tuple[ToolName, ...]] = (
    ToolName.TEXT_TO_IMAGE,
    ToolName.EDIT_IMAGE,
    ToolName.REFERENCE_TO_IMAGE,
    ToolName.INSPECT_IMAGE,
)
"""The tools a policy may call, in the server's order."""

INTERNAL_TOOLS: Final[frozenset[str]] = frozenset({ToolName.UPLOAD_IMAGE})
"""Tools for the caller's bookkeeping (putting input images into the store), hidden from policies."""

LOOK_META_KEY: Final = "io.github.visioncreator/look"
"""Request ``_meta`` key: a true value asks an image tool to inspect its new image in the same call.

The inspection (what ``inspect_image`` with no questions would say) comes back in the result's
``_meta`` under :data:`INSPECTION_META_KEY`: one round trip instead of two, and the tool's
arguments and output schema stay as the model sees them.
"""

INSPECTION_META_KEY: Final = "io.github.visioncreator/inspection"
"""Result ``_meta`` key of the inspection a :data:`LOOK_META_KEY` request asked for."""
