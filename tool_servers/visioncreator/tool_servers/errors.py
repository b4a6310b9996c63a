"""Errors of the tool servers: one small hierarchy under :class:`ToolServerError`.

Errors about a bad input (bytes, a handle, a size) are :class:`ToolInputError`s, also
``ValueError``s: retrying the same call cannot help. Inside a tool any of them becomes a tool
error result the model reads, never a protocol error.
"""

from __future__ import annotations

__all__ = [
    "CorruptImageError",
    "ImageTooLargeError",
    "LimitExceededError",
    "ToolInputError",
    "ToolServerError",
    "UnknownHandleError",
    "UnsupportedImageError",
]


class ToolServerError(Exception):
    """Base class of every error the tool server raises on purpose.

    The message is written for the model that made the call: it says what was wrong and,
    where it helps, what to do instead.
    """


class ToolInputError(ToolServerError, ValueError):
    """A call's input is wrong (bytes, a handle, a size): the same call fails again."""


class ImageTooLargeError(ToolInputError):
    """Image bytes or decoded pixels over a configured limit."""


class UnsupportedImageError(ToolInputError):
    """Bytes that are not an image of an allowed format (PNG, JPEG, WEBP)."""


class CorruptImageError(ToolInputError):
    """Bytes that claim an allowed format but do not decode."""


class UnknownHandleError(ToolInputError, LookupError):
    """A handle that is malformed or names no stored image."""

    def __init__(self, handle: str) -> None:
        self.handle = handle
        shown = handle if len(handle) <= 64 else handle[:61] + "..."
        super().__init__(
            f"unknown image handle {shown}: call text_to_image first or use a handle from an earlier result"
        )


class LimitExceededError(ToolInputError):
    """A requested size over a server limit, e.g. ``width 4096 exceeds max_width 2048``."""
