"""The one safe image decoder: every untrusted byte string becomes pixels here and only here.

Order matters: size first, then magic bytes (Pillow never sees a format we did not allow),
then the header's dimensions against the pixel limit, and only then the actual decode. A
decompression bomb (a small file that claims a huge canvas) is rejected before a single
pixel is allocated. A lint rule bans ``PIL.Image.open`` everywhere else.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection

from PIL import Image

from visioncreator.tool_servers.errors import CorruptImageError, ImageTooLargeError, UnsupportedImageError

__all__ = ["DEFAULT_FORMATS", "decode_image", "format_refusal", "sniff_format"]

DEFAULT_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


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


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    allowed: Collection[str] = DEFAULT_FORMATS,
) -> Image.Image:
    """Decode untrusted bytes into an RGB image, within limits.

    Text metadata of a PNG (``tEXt``/``iTXt`` chunks) stays in the returned image's ``info``.
    Transparency is flattened onto white. Only the first frame of an animation is kept.

    Args:
        data: The file bytes.
        max_bytes: Largest accepted ``len(data)``.
        max_pixels: Largest accepted ``width * height``, checked before decoding.
        allowed: Format names to accept (a subset of ``PNG``, ``JPEG``, ``WEBP``).

    Returns:
        A fully loaded image in mode ``RGB``.

    Raises:
        ImageTooLargeError: The bytes or the claimed pixel count exceed a limit.
        UnsupportedImageError: The bytes are not one of the allowed formats.
        CorruptImageError: The bytes claim an allowed format but do not decode.

    """
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes, over the limit max_input_bytes {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None or fmt not in allowed:
        raise UnsupportedImageError(format_refusal(fmt, allowed))
    try:
        # Turn Pillow's own bomb warning into an error: it must never decode past our check.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])  # noqa: TID251 - the one allowed call
            width, height = image.size
            if width <= 0 or height <= 0:
                raise CorruptImageError(f"{fmt} image has an empty size {width}x{height}")
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit max_decoded_pixels "
                    f"{max_pixels}"
                )
            image.load()
            return _to_rgb(image)
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


def _to_rgb(image: Image.Image) -> Image.Image:
    info = dict(image.info)
    if image.mode == "RGB":
        rgb = image.copy()
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    else:
        rgb = image.convert("RGB")
    rgb.info = {key: value for key, value in info.items() if isinstance(value, str)}
    return rgb
