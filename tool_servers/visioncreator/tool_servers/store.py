"""The content-addressed image store behind every image handle.

A handle is ``img_`` + the first 24 hex digits of a SHA-256 over the image's RGB pixels, its size
and its ground truth (:func:`image_handle`): the same pixels and truth give the same handle in any
process, and nothing has to be encoded to know it. The file is a PNG (filter none, zlib level 1:
deterministic, and cheap to write) that carries the ground truth in an ``iTXt`` chunk, so an image
written out and uploaded again keeps its handle and its truth. Callers name images by handle
only: the store never takes a path.

Two things keep a tool call off the slow work:

- **Write-behind** (:meth:`ImageStore.put_behind`): the handle is known before the PNG is
  encoded, so a tool can answer at once while one writer thread encodes and writes the file.
  Until then the image is *pending*: every store over the same directory in this process reads it
  from memory, and :meth:`ImageStore.flush` waits for the writes (the writer thread also finishes
  them before the interpreter exits). Another process sees the file once it is written.
- **Recent images** stay decoded in memory (up to ``cache_pixels``), so a source image of
  ``edit_image``, ``reference_to_image`` or ``inspect_image`` is not read back and decoded. The
  ground truth of any stored file is read from its text chunk without decoding the pixels.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image
from pydantic import ValidationError

from visioncreator.tool_servers.budget import PixelLRU
from visioncreator.tool_servers.decode import (
    DEFAULT_FORMATS,
    FitBox,
    decode_image,
    encode_png,
    png_size,
    read_png_text,
)
from visioncreator.tool_servers.errors import ImageTooLargeError, UnknownHandleError
from visioncreator.tool_servers.scene import GroundTruth
from visioncreator.tool_servers.schemas import HANDLE_PATTERN
from visioncreator.tool_servers.writes import pending_writes, write_atomic

__all__ = ["TRUTH_KEY", "ImageStore", "StoredImage"]

TRUTH_KEY = "visioncreator:truth"
"""Keyword of the PNG text chunk that holds the ground-truth JSON."""

_HANDLE_RE = re.compile(HANDLE_PATTERN)
# Files the store wrote itself are re-read through the safe decoder too; these limits only
# guard against a damaged or tampered store directory, not against callers.
_OWN_MAX_BYTES = 1 << 30
_OWN_MAX_PIXELS = 1 << 28
# Pillow's own cap on a decompressed text chunk (MAX_TEXT_CHUNK): truth it would drop, we drop.
_MAX_TRUTH_BYTES = 1 << 20
_HANDLE_DOMAIN = b"visioncreator image v2\n"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)


@dataclass(frozen=True, slots=True)
class StoredImage:
    """Metadata of one stored image."""

    handle: str
    width: int
    height: int
    bytes: int | None
    """Size of the stored PNG file; ``None`` while it is still being written (write-behind)."""
    mime_type: str = "image/png"
    truth: GroundTruth | None = None


@dataclass(frozen=True, slots=True)
class _Content:
    """An image the store admitted: its own RGB copy, raw pixels, truth JSON and handle."""

    image: Image.Image
    pixels: bytes
    truth_json: bytes
    handle: str

    def encode(self) -> bytes:
        return encode_png(self.image, (TRUTH_KEY, self.truth_json) if self.truth_json else None, pixels=self.pixels)


def _content(image: Image.Image, truth: GroundTruth | None, owned: bool = False) -> _Content:
    # A copy of our own unless the caller hands the image over: the store's must not change.
    rgb = image.convert("RGB") if image.mode != "RGB" else image if owned else image.copy()
    # Drop inherited metadata (gamma, ICC profile, stray text): the bytes depend on pixels and truth only.
    rgb.info = {}
    truth_json = b"" if truth is None else truth.model_dump_json().encode()
    pixels = rgb.tobytes()
    digest = hashlib.sha256(_HANDLE_DOMAIN)
    digest.update(f"{rgb.width} {rgb.height} {len(truth_json)}\n".encode())
    digest.update(truth_json)
    digest.update(pixels)
    return _Content(rgb, pixels, truth_json, "img_" + digest.hexdigest()[:24])


def _truth_from_text(raw: str | bytes | None, size: tuple[int, int]) -> GroundTruth | None:
    if not raw:
        return None
    try:
        truth = GroundTruth.model_validate_json(raw)
    except ValidationError:
        return None
    return truth if (truth.scene.width, truth.scene.height) == size else None


def _truth_from_info(image: Image.Image) -> GroundTruth | None:
    raw = image.info.get(TRUTH_KEY)
    return _truth_from_text(raw, image.size) if isinstance(raw, str) else None


class ImageStore:
    """A directory of PNG files named by content hash.

    Writes are atomic (a temporary file, then ``os.replace``) and idempotent, so several
    server processes may share one root. Files are opened without following links, and a shard
    directory is checked to lie inside ``root`` (resolved once per shard, not once per call).

    Args:
        root: Directory that holds the images; created if missing.
        max_input_bytes: Largest upload ``put_bytes`` accepts.
        max_decoded_pixels: Largest ``width * height`` ``put_bytes`` accepts.
        allowed_formats: Upload formats ``put_bytes`` accepts, by magic bytes.
        cache_pixels: Decoded pixels of recent images kept in memory (0 keeps none).
        max_pending_writes: Writes that may wait for the writer thread before ``backlogged``
            says to write synchronously instead.

    """

    def __init__(
        self,
        root: Path,
        *,
        max_input_bytes: int = 20 * 1024 * 1024,
        max_decoded_pixels: int = 40_000_000,
        allowed_formats: Collection[str] = DEFAULT_FORMATS,
        cache_pixels: int = 16_777_216,
        max_pending_writes: int = 64,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_input_bytes = max_input_bytes
        self.max_decoded_pixels = max_decoded_pixels
        self.allowed_formats = tuple(allowed_formats)
        self.max_pending_writes = max_pending_writes
        self._recent: PixelLRU[tuple[StoredImage, Image.Image]] = PixelLRU(cache_pixels)
        self._shards: set[str] = set()

    def put(self, image: Image.Image, truth: GroundTruth | None = None) -> StoredImage:
        """Store an image (as RGB PNG) with its optional ground truth; the file exists on return.

        Args:
            image: The pixels; converted to RGB.
            truth: What the synthetic back end knows about the image, if anything.

        Returns:
            The stored image's metadata; its handle is a function of pixels and truth.

        """
        content, stored = self._admit(image, truth)
        path = self.path_of(stored.handle)
        pending = pending_writes.get(path)
        data = pending.data.result() if pending is not None else content.encode()
        if pending is None and not path.exists():
            write_atomic(path, data, self.root)
        stored = replace(stored, bytes=len(data))
        self._remember(stored, content.image)
        return stored

    def put_behind(self, image: Image.Image, truth: GroundTruth | None = None, *, owned: bool = False) -> StoredImage:
        """Store an image like :meth:`put`, but encode and write its file on the writer thread.

        The handle is known at once; the image is readable from this process at once (from
        memory until the file is written). Hashing the pixels is all the caller waits for.

        Args:
            image: The pixels; converted to RGB.
            truth: What the synthetic back end knows about the image, if anything.
            owned: The caller hands the image over and never touches it again (no copy is made).

        Returns:
            The stored image's metadata, with ``bytes`` ``None`` (the file's size is not known yet).

        """
        content, stored = self._admit(image, truth, owned)
        self._remember(stored, content.image)  # readable from memory until the file is written
        pending_writes.start(self.path_of(stored.handle), self.root, content.encode)
        return stored

    @property
    def backlogged(self) -> bool:
        """Whether ``max_pending_writes`` writes already wait: write synchronously instead."""
        return len(pending_writes) >= self.max_pending_writes

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every pending write of this process is on disk (or has failed and been logged).

        Raises:
            TimeoutError: Writes are still pending after ``timeout`` seconds.

        """
        pending_writes.flush(timeout)

    def _admit(
        self, image: Image.Image, truth: GroundTruth | None, owned: bool = False
    ) -> tuple[_Content, StoredImage]:
        content = _content(image, truth, owned)
        rgb = content.image
        return content, StoredImage(handle=content.handle, width=rgb.width, height=rgb.height, bytes=None, truth=truth)

    def _remember(self, stored: StoredImage, image: Image.Image) -> None:
        """Keep ``image`` decoded in the recent-pixels cache under ``stored``'s handle."""
        self._recent.put(stored.handle, stored.width * stored.height, (stored, image))

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

    def recent(self, handle: str) -> tuple[StoredImage, Image.Image] | None:
        """Metadata and a copy of the pixels of a recently stored or loaded image, or ``None``."""
        item = self._recent.get(handle)
        return None if item is None else (item[0], item[1].copy())

    def get(self, handle: str) -> StoredImage:
        """Metadata of a stored image (its truth read from the file's text chunk, pixels never decoded).

        Raises:
            UnknownHandleError: The handle is malformed or not stored.

        """
        item = self._recent.get(handle)
        if item is not None:
            return item[0]
        data = self.read_bytes(handle)
        width, height = png_size(data)
        truth = _truth_from_text(read_png_text(data, TRUTH_KEY, _MAX_TRUTH_BYTES), (width, height))
        return StoredImage(handle=handle, width=width, height=height, bytes=len(data), truth=truth)

    def load(
        self, handle: str, *, fit: FitBox | None = None, max_pixels: int = _OWN_MAX_PIXELS
    ) -> tuple[StoredImage, Image.Image]:
        """Metadata and decoded RGB pixels of a stored image (a recent one is not decoded again).

        Args:
            handle: The image's handle.
            fit: Downscale a larger image to fit this box (its ground truth is then dropped, as
                it no longer matches the pixels); ``None`` keeps the stored size.
            max_pixels: Refuse a file that claims more pixels, before decoding it (a caller
                that reserved memory for :meth:`dimensions` passes what it reserved).

        Returns:
            The stored file's metadata (its own size, even when the pixels were downscaled) and
            the pixels, a copy the caller owns.

        Raises:
            UnknownHandleError: The handle is malformed or not stored.
            ImageTooLargeError: The file claims more than ``max_pixels``.

        """
        hit = self.recent(handle)
        if hit is not None and (fit is None or fit.size(hit[0].width, hit[0].height) == hit[1].size):
            return hit
        data = self.read_bytes(handle)
        image = decode_image(data, max_bytes=_OWN_MAX_BYTES, max_pixels=max_pixels, allowed=("PNG",), fit=fit)
        width, height = png_size(data)
        truth = _truth_from_info(image)
        stored = StoredImage(handle=handle, width=width, height=height, bytes=len(data), truth=truth)
        if image.size == (width, height):
            self._remember(stored, image.copy())
        return stored, image

    def dimensions(self, handle: str) -> tuple[int, int]:
        """The width and height of a stored image, from memory or its file's header (nothing is decoded).

        Raises:
            UnknownHandleError: The handle is malformed or not stored.
            CorruptImageError: The file is not a PNG.
            ImageTooLargeError: The file claims more pixels than the store ever writes.

        """
        item = self._recent.get(handle)
        if item is not None:
            return item[0].width, item[0].height
        width, height = png_size(self._read(handle, 24))
        if width * height > _OWN_MAX_PIXELS:
            raise ImageTooLargeError(f"stored image {handle} claims {width}x{height} pixels: the store is damaged")
        return width, height

    def read_bytes(self, handle: str) -> bytes:
        """The stored PNG file's bytes (a pending write's bytes once it is encoded).

        Raises:
            UnknownHandleError: The handle is malformed or not stored.

        """
        return self._read(handle, -1)

    def _read(self, handle: str, size: int) -> bytes:
        path = self.path_of(handle)
        pending = pending_writes.get(path)
        if pending is not None:
            data = pending.data.result()
            return data if size < 0 else data[:size]
        try:
            # Never through a link: a file planted as a link cannot make the store read elsewhere.
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY)
        except (FileNotFoundError, NotADirectoryError):
            raise UnknownHandleError(handle) from None
        except OSError as exc:
            raise UnknownHandleError(handle) from exc
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise UnknownHandleError(handle)
            return file.read(size)

    def truth(self, handle: str) -> GroundTruth | None:
        """The ground truth stored with an image, or ``None`` when it has none (pixels are not decoded).

        Raises:
            UnknownHandleError: The handle is malformed or not stored.

        """
        return self.get(handle).truth

    def exists(self, handle: str) -> bool:
        """Whether a well-formed handle names a stored image (``False`` for a malformed one)."""
        try:
            path = self.path_of(handle)
        except UnknownHandleError:
            return False
        if path in pending_writes:
            return True
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            return False

    def path_of(self, handle: str) -> Path:
        """The file path of a handle (stored or not), always inside ``root``.

        Raises:
            UnknownHandleError: The handle is malformed, or its shard directory leads out of ``root``.

        """
        if not isinstance(handle, str) or _HANDLE_RE.fullmatch(handle) is None:
            raise UnknownHandleError(str(handle))
        shard = handle[4:6]
        directory = self.root / shard
        if shard not in self._shards:
            # The pattern rules out separators; a shard directory replaced by a link is what is left.
            resolved = directory.resolve()
            if not resolved.is_relative_to(self.root):
                raise UnknownHandleError(handle)
            # Remembered only once it is a real directory of its own: checked once, not on every call.
            if resolved == directory and directory.is_dir():
                self._shards.add(shard)
        return directory / f"{handle}.png"
