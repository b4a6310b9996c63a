"""The content-addressed image store behind every image handle.

A handle is ``img_`` + the first 24 hex digits of the SHA-256 of the stored PNG. The PNG is
encoded deterministically (same pixels and ground truth, same bytes, same handle) and carries
the ground truth in an ``iTXt`` chunk, so an image written out and uploaded again keeps it.
Callers name images by handle only: the store never takes a path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin
from pydantic import ValidationError

from visioncreator.tool_servers.decode import DEFAULT_FORMATS, FitBox, decode_image, png_size
from visioncreator.tool_servers.errors import ImageTooLargeError, UnknownHandleError
from visioncreator.tool_servers.scene import GroundTruth
from visioncreator.tool_servers.schemas import HANDLE_PATTERN

__all__ = ["TRUTH_KEY", "ImageStore", "StoredImage"]

TRUTH_KEY = "visioncreator:truth"
"""Keyword of the PNG text chunk that holds the ground-truth JSON."""

_HANDLE_RE = re.compile(HANDLE_PATTERN)
# Files the store wrote itself are re-read through the safe decoder too; these limits only
# guard against a damaged or tampered store directory, not against callers.
_OWN_MAX_BYTES = 1 << 30
_OWN_MAX_PIXELS = 1 << 28


@dataclass(frozen=True, slots=True)
class StoredImage:
    """Metadata of one stored image."""

    handle: str
    width: int
    height: int
    bytes: int
    """Size of the stored PNG file."""
    mime_type: str = "image/png"
    truth: GroundTruth | None = None


class ImageStore:
    """A directory of PNG files named by content hash.

    Writes are atomic (a temporary file, then ``os.replace``) and idempotent, so several
    server processes may share one root.

    Args:
        root: Directory that holds the images; created if missing.
        max_input_bytes: Largest upload ``put_bytes`` accepts.
        max_decoded_pixels: Largest ``width * height`` ``put_bytes`` accepts.
        allowed_formats: Upload formats ``put_bytes`` accepts, by magic bytes.

    """

    def __init__(
        self,
        root: Path,
        *,
        max_input_bytes: int = 20 * 1024 * 1024,
        max_decoded_pixels: int = 40_000_000,
        allowed_formats: Collection[str] = DEFAULT_FORMATS,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_input_bytes = max_input_bytes
        self.max_decoded_pixels = max_decoded_pixels
        self.allowed_formats = tuple(allowed_formats)

    def put(self, image: Image.Image, truth: GroundTruth | None = None) -> StoredImage:
        """Store an image (as RGB PNG) with its optional ground truth.

        Args:
            image: The pixels; converted to RGB.
            truth: What the synthetic back end knows about the image, if anything.

        Returns:
            The stored image's metadata; its handle is a function of pixels and truth.

        """
        data = _encode_png(image, truth)
        handle = "img_" + hashlib.sha256(data).hexdigest()[:24]
        path = self.path_of(handle)
        if not path.exists():
            _write_atomic(path, data)
        return StoredImage(
            handle=handle, width=image.width, height=image.height, bytes=len(data), mime_type="image/png", truth=truth
        )

    def put_bytes(self, data: bytes, *, fit: FitBox | None = None) -> StoredImage:
        """Store an uploaded image file (PNG, JPEG or WEBP), re-encoded as PNG.

        A valid ground-truth chunk written by this store survives the round trip; an invalid
        one, or one whose size disagrees with the (possibly downscaled) pixels, is dropped.

        Args:
            data: The file bytes, untrusted.
            fit: Downscale a larger image to fit this box before storing it; ``None`` stores
                the image at its own size.

        Returns:
            The stored image's metadata.

        Raises:
            ImageTooLargeError: Over ``max_input_bytes`` or ``max_decoded_pixels``.
            UnsupportedImageError: Not a file of ``allowed_formats``.
            CorruptImageError: The file does not decode.

        """
        image = decode_image(
            data,
            max_bytes=self.max_input_bytes,
            max_pixels=self.max_decoded_pixels,
            allowed=self.allowed_formats,
            fit=fit,
        )
        return self.put(image, _truth_from_info(image))

    def get(self, handle: str) -> StoredImage:
        """Metadata of a stored image.

        Raises:
            UnknownHandleError: The handle is malformed or not stored.

        """
        return self.load(handle)[0]

    def load(
        self, handle: str, *, fit: FitBox | None = None, max_pixels: int = _OWN_MAX_PIXELS
    ) -> tuple[StoredImage, Image.Image]:
        """Metadata and decoded RGB pixels of a stored image.

        Args:
            handle: The image's handle.
            fit: Downscale a larger image to fit this box (its ground truth is then dropped, as
                it no longer matches the pixels); ``None`` keeps the stored size.
            max_pixels: Refuse a file that claims more pixels, before decoding it (a caller
                that reserved memory for :meth:`dimensions` passes what it reserved).

        Returns:
            The stored file's metadata (its own size, even when the pixels were downscaled) and
            the pixels.

        Raises:
            UnknownHandleError: The handle is malformed or not stored.
            ImageTooLargeError: The file claims more than ``max_pixels``.

        """
        data = self.read_bytes(handle)
        image = decode_image(data, max_bytes=_OWN_MAX_BYTES, max_pixels=max_pixels, allowed=("PNG",), fit=fit)
        width, height = png_size(data)
        stored = StoredImage(
            handle=handle,
            width=width,
            height=height,
            bytes=len(data),
            mime_type="image/png",
            truth=_truth_from_info(image),
        )
        return stored, image

    def dimensions(self, handle: str) -> tuple[int, int]:
        """The width and height of a stored image, from its file's header (nothing is decoded).

        Raises:
            UnknownHandleError: The handle is malformed or not stored.
            CorruptImageError: The file is not a PNG.
            ImageTooLargeError: The file claims more pixels than the store ever writes.

        """
        try:
            with self.path_of(handle).open("rb") as file:
                head = file.read(24)
        except FileNotFoundError:
            raise UnknownHandleError(handle) from None
        width, height = png_size(head)
        if width * height > _OWN_MAX_PIXELS:
            raise ImageTooLargeError(f"stored image {handle} claims {width}x{height} pixels: the store is damaged")
        return width, height

    def read_bytes(self, handle: str) -> bytes:
        """The stored PNG file's bytes.

        Raises:
            UnknownHandleError: The handle is malformed or not stored.

        """
        try:
            return self.path_of(handle).read_bytes()
        except FileNotFoundError:
            raise UnknownHandleError(handle) from None

    def truth(self, handle: str) -> GroundTruth | None:
        """The ground truth stored with an image, or ``None`` when it has none.

        Raises:
            UnknownHandleError: The handle is malformed or not stored.

        """
        return self.get(handle).truth

    def exists(self, handle: str) -> bool:
        """Whether a well-formed handle names a stored image (``False`` for a malformed one)."""
        try:
            return self.path_of(handle).is_file()
        except UnknownHandleError:
            return False

    def path_of(self, handle: str) -> Path:
        """The file path of a handle (stored or not), always inside ``root``.

        Raises:
            UnknownHandleError: The handle is malformed.

        """
        if not isinstance(handle, str) or _HANDLE_RE.fullmatch(handle) is None:
            raise UnknownHandleError(str(handle))
        path = (self.root / handle[4:6] / f"{handle}.png").resolve()
        # The pattern already rules out separators; this check keeps the invariant explicit.
        if not path.is_relative_to(self.root):
            raise UnknownHandleError(handle)
        return path


def _encode_png(image: Image.Image, truth: GroundTruth | None) -> bytes:
    rgb = image.convert("RGB") if image.mode != "RGB" else image.copy()
    # Drop inherited metadata (gamma, ICC profile, stray text): the bytes must depend on
    # pixels and truth only.
    rgb.info = {}
    pnginfo = PngImagePlugin.PngInfo()
    if truth is not None:
        pnginfo.add_itxt(TRUTH_KEY, truth.model_dump_json(), zip=True)
    buffer = io.BytesIO()
    # Level 1: four times faster than zlib's default on our images, for a few percent more bytes.
    rgb.save(buffer, format="PNG", pnginfo=pnginfo, compress_level=1, optimize=False)
    return buffer.getvalue()


def _truth_from_info(image: Image.Image) -> GroundTruth | None:
    raw = image.info.get(TRUTH_KEY)
    if not isinstance(raw, str):
        return None
    try:
        truth = GroundTruth.model_validate_json(raw)
    except ValidationError:
        return None
    if (truth.scene.width, truth.scene.height) != image.size:
        return None
    return truth


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
