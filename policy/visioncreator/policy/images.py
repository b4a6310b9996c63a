"""Decoding an image the policy is shown, within limits (the policy package may not import the tool servers')."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["decode_image"]


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Any:
    """The image in ``data`` as an RGB PIL image, checked before it is decoded.

    The order mirrors the tool servers' decoder: the byte count, the magic bytes, then the header's
    size against the pixel cap, and only then the decode.

    Raises:
        ValueError: The bytes are not a PNG/JPEG/WebP image, or exceed ``max_bytes``/``max_pixels``.

    """
    from PIL import Image  # deferred: only policies shown images need Pillow

    if len(data) > max_bytes:
        raise ValueError(f"image of {len(data)} bytes exceeds max_image_bytes={max_bytes}")
    if not (data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")) or data[8:12] == b"WEBP"):
        raise ValueError("not a PNG, JPEG or WebP image")
    with Image.open(io.BytesIO(data)) as img:  # noqa: TID251
        if img.width * img.height > max_pixels:
            raise ValueError(f"image of {img.width}x{img.height} exceeds max_image_pixels={max_pixels}")
        img.load()
        return img.convert("RGB")
