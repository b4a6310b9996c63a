"""The one safe image decoder: every untrusted byte string becomes pixels here and only here.

Order matters: size first, then magic bytes (Pillow never sees a format we did not allow),
then the header's dimensions against the pixel limit, and only then the actual decode. A
decompression bomb (a small file that claims a huge canvas) is rejected before a single
pixel is allocated. A lint rule bans ``PIL.Image.open`` everywhere else.

:func:`probe_image` runs every check but the decode, so a caller can reserve memory for the
claimed size (see ``budget.py``) before :func:`decode_image` allocates it.

The store's own PNG files are written by :func:`encode_png` (no Pillow encoder: a fixed filter
is three times faster) and their text chunk is read by :func:`read_png_text` without touching the
pixels.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image

from visioncreator.tool_servers.errors import CorruptImageError, ImageTooLargeError, UnsupportedImageError

__all__ = [
    "DEFAULT_FORMATS",
    "FitBox",
    "ImageHeader",
    "decode_image",
    "encode_png",
    "format_refusal",
    "png_size",
    "probe_image",
    "read_png_text",
    "sniff_format",
]

DEFAULT_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Signature, then the IHDR chunk's length (13) and type, then width and height.
_PNG_IHDR = struct.Struct(">8sI4sII")
_CHUNK_HEAD = struct.Struct(">I4s")


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What an image file claims about itself, read without decoding it."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        """The claimed ``width * height``."""
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class FitBox:
    """The largest image kept after decoding; larger ones are downscaled, aspect ratio kept."""

    max_width: int
    max_height: int
    max_pixels: int

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The size an image of ``width`` x ``height`` is kept at: its own when it fits."""
        if width <= self.max_width and height <= self.max_height and width * height <= self.max_pixels:
            return width, height
        scale = min(self.max_width / width, self.max_height / height, math.sqrt(self.max_pixels / (width * height)))
        # The epsilon keeps 1200 * (256 / 1200) at 256, not 255.
        fitted = [
            max(1, min(limit, math.floor(side * scale + 1e-9)))
            for side, limit in ((width, self.max_width), (height, self.max_height))
        ]
        while fitted[0] * fitted[1] > self.max_pixels and max(fitted) > 1:
            fitted[fitted.index(max(fitted))] -= 1
        return fitted[0], fitted[1]


def sniff_format(data: bytes) -> str | None:
    """Name the image format from the leading magic bytes.

    Args:
        data: The start of a file (12 bytes are enough).

    Returns:
        ``"PNG"``, ``"JPEG"`` or ``"WEBP"``, or ``None`` for anything else.

    """
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def png_size(head: bytes) -> tuple[int, int]:
    """The width and height a PNG file's IHDR chunk claims, from the file's first 24 bytes.

    Raises:
        CorruptImageError: The bytes do not start like a PNG file, or claim an empty size.

    """
    if len(head) < _PNG_IHDR.size:
        raise CorruptImageError(f"PNG file is truncated: {len(head)} bytes")
    magic, length, kind, width, height = _PNG_IHDR.unpack_from(head)
    if magic != _PNG_MAGIC or length != 13 or kind != b"IHDR":
        raise CorruptImageError("not a PNG file: no IHDR chunk after the signature")
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"PNG image has an empty size {width}x{height}")
    return width, height


def format_refusal(fmt: str | None, allowed: Collection[str]) -> str:
    """The error message for bytes whose format is unknown or not allowed.

    Args:
        fmt: What ``sniff_format`` found (``None`` when nothing it knows).
        allowed: The accepted format names.

    Returns:
        A message that names the setting (``allowed_input_formats``) and the accepted formats.

    """
    names = ", ".join(sorted(allowed))
    found = "an unknown format" if fmt is None else fmt
    return (
        f"not a supported image: found {found}, expected one of {names} (checked by magic bytes; allowed_input_formats)"
    )


def probe_image(
    data: bytes, *, max_bytes: int, max_pixels: int, allowed: Collection[str] = DEFAULT_FORMATS
) -> ImageHeader:
    """Run every check of :func:`decode_image` except the decode itself.

    Args:
        data: The file bytes.
        max_bytes: Largest accepted ``len(data)``.
        max_pixels: Largest accepted ``width * height``.
        allowed: Format names to accept.

    Returns:
        The format and the size the file claims.

    Raises:
        ImageTooLargeError: The bytes or the claimed pixel count exceed a limit.
        UnsupportedImageError: The bytes are not one of the allowed formats.
        CorruptImageError: The header does not parse.

    """
    fmt = _check_bytes(data, max_bytes, allowed)
    with _decoding(fmt, max_pixels):
        image = _open(data, fmt, max_pixels)
        return ImageHeader(fmt, image.width, image.height)


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    allowed: Collection[str] = DEFAULT_FORMATS,
    fit: FitBox | None = None,
) -> Image.Image:
    """Decode untrusted bytes into an RGB image, within limits.

    Text metadata of a PNG (``tEXt``/``iTXt`` chunks) stays in the returned image's ``info``.
    Transparency is flattened onto white. Only the first frame of an animation is kept.

    Args:
        data: The file bytes.
        max_bytes: Largest accepted ``len(data)``.
        max_pixels: Largest accepted ``width * height``, checked before decoding.
        allowed: Format names to accept (a subset of ``PNG``, ``JPEG``, ``WEBP``).
        fit: Downscale a larger image to fit this box (a JPEG is decoded at a reduced scale
            to start with); ``None`` keeps the image's own size.

    Returns:
        A fully loaded image in mode ``RGB``.

    Raises:
        ImageTooLargeError: The bytes or the claimed pixel count exceed a limit.
        UnsupportedImageError: The bytes are not one of the allowed formats.
        CorruptImageError: The bytes claim an allowed format but do not decode.

    """
    fmt = _check_bytes(data, max_bytes, allowed)
    with _decoding(fmt, max_pixels):
        image = _open(data, fmt, max_pixels)
        target = image.size if fit is None else fit.size(*image.size)
        if fmt == "JPEG" and target != image.size:
            # libjpeg scales by 1/2, 1/4 or 1/8 while decoding: the full size is never allocated.
            image.draft("RGB", target)
        image.load()
        return _to_rgb(image, target)


def _check_bytes(data: bytes, max_bytes: int, allowed: Collection[str]) -> str:
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes, over the limit max_input_bytes {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None or fmt not in allowed:
        raise UnsupportedImageError(format_refusal(fmt, allowed))
    return fmt


def _open(data: bytes, fmt: str, max_pixels: int) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=[fmt])  # noqa: TID251 - the one allowed call
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"{fmt} image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit max_decoded_pixels {max_pixels}"
        )
    return image


@contextmanager
def _decoding(fmt: str, max_pixels: int) -> Iterator[None]:
    try:
        # Turn Pillow's own bomb warning into an error: it must never decode past our check.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageTooLargeError(
            f"image rejected as a decompression bomb ({exc}); the limit is max_decoded_pixels {max_pixels}"
        ) from exc
    except (ImageTooLargeError, CorruptImageError):
        raise
    except Exception as exc:
        # Pillow reports broken files with many types (OSError, SyntaxError, ValueError, EOFError,
        # struct.error, ...): every one of them means the same thing to the caller.
        raise CorruptImageError(f"{fmt} image does not decode: {type(exc).__name__}: {exc}") from exc


def _to_rgb(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    info = {key: value for key, value in image.info.items() if isinstance(value, str)}
    if image.mode == "RGB":
        # A resize makes a new image anyway; only an image kept as it is needs a copy of its own.
        rgb = image.copy() if size == image.size else image
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # convert() copies even to the same mode: an RGBA image is used as it is.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    else:
        rgb = image.convert("RGB")
    if size != rgb.size:
        rgb = _shrink(rgb, size)
    rgb.info = info
    return rgb


def _shrink(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # A box reduction by a whole factor first: the Lanczos pass then reads a few times fewer
    # pixels, and its intermediate image is as small.
    factor = min(image.width // size[0], image.height // size[1])
    if factor >= 2:
        image = image.reduce(factor)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def encode_png(image: Image.Image, text: tuple[str, bytes] | None = None, *, pixels: bytes | None = None) -> bytes:
    """An RGB image as a PNG file, deterministically, with an optional compressed ``iTXt`` chunk.

    Every row has filter type none and the pixels are deflated at zlib level 1: on flat
    synthetic images that is about three times faster than Pillow's adaptive filters for files
    of about the same size, and the same pixels always give the same bytes. The heavy steps
    (the row copy and zlib) release the GIL, so the encode can run beside an event loop.

    Args:
        image: An image in mode ``RGB``.
        text: ``(keyword, UTF-8 text)`` to store in an ``iTXt`` chunk before the pixels.
        pixels: ``image.tobytes()`` when the caller already has it.

    Returns:
        The file's bytes.

    Raises:
        ValueError: The image is not ``RGB``.

    """
    if image.mode != "RGB":
        raise ValueError(f"encode_png needs an RGB image, got mode {image.mode}")
    import numpy as np  # here, not at the top: a server that never encodes starts without numpy

    stride = image.width * 3
    raw = np.frombuffer(image.tobytes() if pixels is None else pixels, np.uint8).reshape(image.height, stride)
    rows = np.zeros((image.height, stride + 1), np.uint8)  # column 0: the filter byte of each row
    rows[:, 1:] = raw
    parts = [_PNG_MAGIC, _chunk(b"IHDR", struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0))]
    if text is not None:
        keyword, body = text
        # Keyword, NUL, compressed, zlib, no language tag, no translated keyword, then the text.
        parts.append(_chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x01\x00\x00\x00" + zlib.compress(body, 6)))
    parts += [_chunk(b"IDAT", zlib.compress(rows.data, 1)), _chunk(b"IEND", b"")]
    return b"".join(parts)


def read_png_text(data: bytes, keyword: str, max_bytes: int) -> bytes | None:
    """The text of a PNG's ``iTXt`` chunk named ``keyword``, read before the pixels; never decodes them.

    Args:
        data: A PNG file (the store's own; a broken one gives ``None``, never an exception).
        keyword: The chunk's keyword.
        max_bytes: Longest text returned; a longer one gives ``None`` (inflating stops there).

    Returns:
        The text's bytes, or ``None`` when there is no such chunk before the image data.

    """
    name = keyword.encode("latin-1") + b"\x00"
    offset = len(_PNG_MAGIC)
    while offset + 8 <= len(data):
        length, kind = _CHUNK_HEAD.unpack_from(data, offset)
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"iTXt" and body.startswith(name):
            return _itxt_text(body[len(name) :], max_bytes)
    return None


def _itxt_text(rest: bytes, max_bytes: int) -> bytes | None:
    if len(rest) < 2:
        return None
    compressed, text = rest[0], rest[2:]
    # Skip the language tag and the translated keyword (each ends with a NUL).
    for _ in range(2):
        end = text.find(b"\x00")
        if end < 0:
            return None
        text = text[end + 1 :]
    if not compressed:
        return text if len(text) <= max_bytes else None
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(text, max_bytes)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else plain


def _chunk(kind: bytes, body: bytes) -> bytes:
    return _CHUNK_HEAD.pack(len(body), kind) + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))
