"""The tools' names: the one vocabulary every package spells tool names with."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["IMAGE_TOOLS", "INTERNAL_TOOLS", "POLICY_TOOLS", "ToolName"]


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
