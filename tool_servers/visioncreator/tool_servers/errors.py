"""Errors of the tool servers: one small hierarchy under :class:`ToolServerError`.

Every error here is about a bad input (bytes, a handle, a size), so retrying the same call
cannot help. The base class is a ``ValueError`` on purpose: LangGraph's default retry policy
does not retry ``ValueError``, and it would retry an unknown exception type.
"""

from __future__ import annotations

__all__ = [
    "CorruptImageError",
    "ImageTooLargeError",
    "LimitExceededError",
    "ToolServerError",
    "UnknownHandleError",
    "UnsupportedImageError",
]


class ToolServerError(ValueError):
    """Base class of every error the tool server raises on purpose.

    The message is written for the model that made the call: it says what was wrong and,
    where it helps, what to do instead.
    """


class ImageTooLargeError(ToolServerError):
    """Image bytes or decoded pixels over a configured limit."""


class UnsupportedImageError(ToolServerError):
    """Bytes that are not an image of an allowed format (PNG, JPEG, WEBP)."""


class CorruptImageError(ToolServerError):
    """Bytes that claim an allowed format but do not decode."""


class UnknownHandleError(ToolServerError, LookupError):
    """A handle that is malformed or names no stored image."""

    def __init__(self, handle: str) -> None:
        self.handle = handle
        shown = handle if len(handle) <= 64 else handle[:61] + "..."
        super().__init__(
            f"unknown image handle {shown}: call text_to_image first or use a handle from an earlier result"
        )


class LimitExceededError(ToolServerError):
    """A requested size over a server limit, e.g. ``width 4096 exceeds max_width 2048``."""
