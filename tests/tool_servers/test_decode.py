from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
from PIL import Image, PngImagePlugin

from visioncreator.tool_servers.decode import decode_image, sniff_format
from visioncreator.tool_servers.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ToolServerError,
    UnsupportedImageError,
)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_decodes_allowed_formats_to_rgb(fmt: str) -> None:
    data = _encode(Image.new("RGB", (40, 30), (200, 10, 10)), fmt)
    assert sniff_format(data) == fmt
    image = decode_image(data, max_bytes=1 << 24, max_pixels=1 << 24)
    assert image.mode == "RGB"
    assert image.size == (40, 30)
    red, green, _ = image.getpixel((20, 15))  # type: ignore[misc]
    assert red > 150
    assert green < 60


def test_transparency_is_flattened_onto_white() -> None:
    data = _encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG")
    image = decode_image(data, max_bytes=1 << 24, max_pixels=1 << 24)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_png_text_chunks_survive() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("visioncreator:truth", "ünïcode", zip=True)
    data = _encode(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)
    assert decode_image(data, max_bytes=1 << 24, max_pixels=1 << 24).info["visioncreator:truth"] == "ünïcode"


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"GIF89a" + b"\0" * 32, b"BM" + b"\0" * 64, b"<svg xmlns='http://www.w3.org/2000/svg'/>"],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImageError, match="PNG"):
        decode_image(data, max_bytes=1 << 24, max_pixels=1 << 24)


def test_format_outside_allowed_is_unsupported() -> None:
    data = _encode(Image.new("RGB", (8, 8)), "JPEG")
    with pytest.raises(UnsupportedImageError):
        decode_image(data, max_bytes=1 << 20, max_pixels=1 << 20, allowed=("PNG",))


def test_too_many_bytes_names_limit_and_value() -> None:
    data = _encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    with pytest.raises(ImageTooLargeError, match=rf"{len(data)} bytes.*max_input_bytes 100"):
        decode_image(data, max_bytes=100, max_pixels=1 << 20)


@pytest.mark.parametrize(
    ("side", "pixels"),
    [
        (8_000, "64000000"),  # over our limit, under Pillow's own guard: our header check rejects it
        (100_000, "10000000000"),  # over Pillow's guard too: it fires inside open(), still our error
    ],
)
def test_bomb_is_rejected_before_decoding(png_header: Callable[[int, int], bytes], side: int, pixels: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=rf"{pixels} pixels.*max_decoded_pixels 40000000"):
        decode_image(png_header(side, side), max_bytes=1 << 20, max_pixels=40_000_000)
    assert time.perf_counter() - started < 1.0


def test_pillow_bomb_guard_holds_with_a_lax_limit(png_header: Callable[[int, int], bytes]) -> None:
    # Even with our own limit set absurdly high, Pillow's guard must surface as our error type.
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        decode_image(png_header(30_000, 30_000), max_bytes=1 << 20, max_pixels=1 << 40)


def test_claimed_size_within_limits_but_no_data_is_corrupt(png_header: Callable[[int, int], bytes]) -> None:
    with pytest.raises(CorruptImageError):
        decode_image(png_header(500, 500), max_bytes=1 << 24, max_pixels=1 << 24)


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9])
def test_truncated_png_is_corrupt(keep: float) -> None:
    data = _encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    with pytest.raises(CorruptImageError):
        decode_image(data[: int(len(data) * keep)], max_bytes=1 << 24, max_pixels=1 << 24)


def test_errors_share_a_non_retryable_base() -> None:
    for error in (ImageTooLargeError, UnsupportedImageError, CorruptImageError):
        assert issubclass(error, ToolServerError)
        assert issubclass(error, ValueError)
