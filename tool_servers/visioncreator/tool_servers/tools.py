"""What the tools do, below the MCP layer: limits, admission control, seeds, storage, results.

``server.py`` registers the MCP tool functions (their signatures and model-facing docstrings)
and hands every call to a :class:`ToolRunner`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import io
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from PIL import Image

from visioncreator.tool_servers.backend import Generated, ImageBackend, SourceImage
from visioncreator.tool_servers.budget import PixelBudget, limit_allocator_retention
from visioncreator.tool_servers.decode import FitBox, format_refusal, probe_image, sniff_format
from visioncreator.tool_servers.errors import (
    LimitExceededError,
    ToolServerError,
    UnsupportedImageError,
)
from visioncreator.tool_servers.journal import RecipeJournal
from visioncreator.tool_servers.mcp_compat import (
    CallToolResult,
    ImageContent,
    ToolError,
    mcp_model,
)
from visioncreator.tool_servers.names import INSPECTION_META_KEY, ToolName
from visioncreator.tool_servers.recovery import recover
from visioncreator.tool_servers.results import tool_result
from visioncreator.tool_servers.schemas import (
    EditImageInput,
    ImageResult,
    InspectImageInput,
    InspectResult,
    ReferenceToImageInput,
    TextToImageInput,
    UploadImageInput,
)
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.store import ImageStore, StoredImage

__all__ = ["ToolRunner", "default_backend"]

_log = logging.getLogger("visioncreator.tool_servers.server")
_MAX_ERROR_DETAIL = 300
_ImageInput = TextToImageInput | EditImageInput | ReferenceToImageInput


def default_backend(settings: ServerSettings) -> ImageBackend:
    """The back end ``settings.backend`` names."""
    # Imported here so that importing the server module stays cheap (the diffusion back ends
    # load torch and diffusers when they are built, not when this module is imported).
    if settings.backend in ("tiny", "diffusers"):
        from visioncreator.tool_servers.diffusion import make_backend

        return make_backend(settings.backend, settings.diffusion)
    from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
    from visioncreator.tool_servers.synthetic.observer import ObserverSettings

    observer = ObserverSettings(
        miss_rate=settings.observe_miss_rate,
        count_rate=settings.observe_count_rate,
        color_rate=settings.observe_color_rate,
        ocr_rate=settings.observe_ocr_rate,
    )
    synthetic = SyntheticSettings(fault_rate=settings.fault_rate, tool_seed=settings.tool_seed, observer=observer)
    if settings.fault_types is not None:
        synthetic = dataclasses.replace(synthetic, fault_types=settings.fault_types)
    return SyntheticBackend(synthetic)


class ToolRunner:
    """The tool implementations, shared by the registered tool functions.

    Decoded images are held under one :class:`PixelBudget` of ``max_inflight_pixels``: an
    upload or a stored image is decoded only once its claimed size is reserved, and kept at
    most as large as a tool may make one (``max_width``, ``max_height``, ``max_pixels``).
    """

    def __init__(self, settings: ServerSettings, backend: ImageBackend, store: ImageStore) -> None:
        self.settings = settings
        self.backend = backend
        self.store = store
        self.pixels = PixelBudget(settings.max_inflight_pixels)
        # Large decodes must not leave the process at its peak size once they are done.
        limit_allocator_retention()
        self.fit = FitBox(settings.max_width, settings.max_height, settings.max_pixels)
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        # Calls running plus calls waiting for a slot. Checked and bumped with no await in
        # between, so on one event loop the count is exact.
        self._admitted = 0
        self.journal = RecipeJournal(store.root, store.exists)

    async def run(self, tool: str, work: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
        """Run one call under admission control, the concurrency cap and the timeout.

        Every failure becomes a ToolError; a call that would make the queue longer than
        ``max_queue`` is refused before it waits.
        """
        running, waiting = self.settings.max_concurrency, self.settings.max_queue
        if self._admitted >= running + waiting:
            raise ToolError(
                f"{tool} refused: the server is busy (all max_concurrency {running} slots running and the "
                f"queue full at max_queue {waiting}); retry in a moment"
            )
        self._admitted += 1
        try:
            async with self._slots:
                return await self._run_admitted(tool, work)
        finally:
            self._admitted -= 1

    async def _run_admitted(self, tool: str, work: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await work()
        except ToolError:
            raise
        except ToolServerError as exc:
            raise ToolError(str(exc)) from exc
        except TimeoutError as exc:
            raise ToolError(
                f"{tool} timed out after {self.settings.request_timeout_s:g} s (request_timeout_s); "
                "try a smaller image or a simpler request"
            ) from exc
        except Exception as exc:
            _log.exception("%s failed in back end %s", tool, self.backend.name)
            detail = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_DETAIL]
            raise ToolError(f"{tool} failed in the {self.backend.name} back end: {detail}") from exc

    def check_steps(self, steps: int | None) -> None:
        """Reject a denoising step count over ``max_steps``."""
        if steps is not None and steps > self.settings.max_steps:
            raise LimitExceededError(
                f"steps {steps} exceeds max_steps {self.settings.max_steps}: ask for fewer steps or omit steps"
            )

    def check_size(self, width: int, height: int) -> None:
        """Reject sizes over the server's limits, naming the limit."""
        limits = self.settings
        if width > limits.max_width:
            raise LimitExceededError(f"width {width} exceeds max_width {limits.max_width}")
        if height > limits.max_height:
            raise LimitExceededError(f"height {height} exceeds max_height {limits.max_height}")
        if width * height > limits.max_pixels:
            raise LimitExceededError(
                f"width x height = {width}x{height} = {width * height} pixels exceeds max_pixels {limits.max_pixels}"
            )

    @asynccontextmanager
    async def sources(self, tool: str, handles: Sequence[str]) -> AsyncIterator[list[SourceImage]]:
        """Load stored images for a back end, under the pixel budget, for the body of the ``async with``.

        Images larger than the fit box are downscaled to it. The list is emptied on exit so the
        pixels are freed with the budget's hold; callers pass its items on, never keep them.

        Raises:
            UnknownHandleError: A handle is malformed or not stored.
            LimitExceededError: The images could never fit in ``max_inflight_pixels``.

        """
        unique = list(dict.fromkeys(handles))
        recent = [self.store.recent(handle) for handle in unique]
        if all(hit is not None and self.fit.size(*hit[1].size) == hit[1].size for hit in recent):
            # Every image is still decoded in memory: no thread hop, no file, no decode.
            async with self._recent_sources(tool, handles, [hit for hit in recent if hit is not None]) as ready:
                yield ready
            return
        recent.clear()
        for handle in unique:
            await self.recover(handle)  # a no-op for a stored image; a killed server's unwritten one is made again
        sizes = await anyio.to_thread.run_sync(lambda: [self.store.dimensions(handle) for handle in unique])
        full = [width * height for width, height in sizes]
        kept = [width * height for width, height in (self.fit.size(*size) for size in sizes)]
        # Decoded one at a time: at worst, what is kept plus the one full decode in progress.
        async with self.pixels.hold(sum(kept) + max(full, default=0), tool) as hold:
            loaded: dict[str, SourceImage] = {}
            sources: list[SourceImage] = []
            try:
                for handle, pixels in zip(unique, full, strict=True):
                    stored, image = await anyio.to_thread.run_sync(
                        functools.partial(self.store.load, handle, fit=self.fit, max_pixels=pixels)
                    )
                    loaded[handle] = SourceImage(handle=handle, image=image, truth=stored.truth)
                hold.shrink_to(sum(kept))
                sources.extend(loaded[handle] for handle in handles)
                loaded.clear()
                yield sources
            finally:
                # A traceback may keep this frame alive: its pixels must not outlive the hold.
                loaded.clear()
                sources.clear()

    @asynccontextmanager
    async def _recent_sources(
        self, tool: str, handles: Sequence[str], recent: list[tuple[StoredImage, Image.Image]]
    ) -> AsyncIterator[list[SourceImage]]:
        """Sources from the store's recent images (copies), under the pixel budget like decoded ones."""
        by_handle = {stored.handle: SourceImage(handle=stored.handle, image=image, truth=stored.truth)
                     for stored, image in recent}  # fmt: skip
        recent.clear()
        sources: list[SourceImage] = []
        try:
            async with self.pixels.hold(sum(s.image.width * s.image.height for s in by_handle.values()), tool):
                sources.extend(by_handle[handle] for handle in handles)
                by_handle.clear()
                yield sources
        finally:
            by_handle.clear()
            sources.clear()

    async def finish(
        self, tool: str, generated: Generated, args: _ImageInput, generator_s: float, *, look: bool = False
    ) -> CallToolResult:
        """Store a generated image and build the tool result.

        With write-behind the answer waits only for the handle (a hash of pixels and truth) and
        the call's recipe in the journal; the PNG is encoded and written on the store's writer
        thread.
        """
        image = generated.image
        self.check_size(image.width, image.height)
        if self.settings.simulated_latency_s:
            await asyncio.sleep(self.settings.simulated_latency_s)
        if self.settings.writes_behind and not self.store.backlogged:
            # The back end made the image for this call alone: the store may keep it as it is.
            stored = self.store.put_behind(image, generated.truth, owned=True)
            self.journal.record(stored.handle, tool, args.model_dump(mode="json", exclude={"preview"}))
        else:
            stored = await anyio.to_thread.run_sync(self.store.put, image, generated.truth)
        if self.settings.call_log is not None:
            await anyio.to_thread.run_sync(self._log_call, tool, stored.handle, generated.seed)
        result = ImageResult(
            handle=stored.handle,
            width=stored.width,
            height=stored.height,
            mime_type=stored.mime_type,
            # With write-behind the size is never known at answer time, even when a backlog made
            # this write synchronous: the answer must not depend on the load (trajectories replay).
            bytes=None if self.settings.writes_behind else stored.bytes,
            seed=generated.seed,
            tool=tool,
            uri=f"image://{stored.handle}",
            generator_s=generator_s,
            changed=generated.changed,
        )
        thumbnail = await anyio.to_thread.run_sync(self._preview, image) if args.preview else None
        answer = tool_result(result, thumbnail)
        if look:
            # The new image is still in hand: looked at here, not decoded again in a second call.
            seen = await self._inspect(SourceImage(handle=stored.handle, image=image, truth=generated.truth))
            answer.meta = {**(answer.meta or {}), INSPECTION_META_KEY: seen.model_dump(mode="json")}
        return answer

    def _log_call(self, tool: str, handle: str, seed: int) -> None:
        assert self.settings.call_log is not None
        line = json.dumps({"tool": tool, "handle": handle, "seed": seed, "time": time.time()})
        with self.settings.call_log.open("a") as log:
            log.write(line + "\n")

    def _preview(self, image: Image.Image) -> ImageContent:
        thumb = image.convert("RGB")
        thumb.thumbnail((self.settings.preview_size, self.settings.preview_size))
        buffer = io.BytesIO()
        thumb.save(buffer, format="PNG")
        return mcp_model(
            ImageContent, type="image", data=base64.b64encode(buffer.getvalue()).decode("ascii"), mime_type="image/png"
        )

    async def text_to_image(self, args: TextToImageInput, *, look: bool = False) -> CallToolResult:
        """Check limits, resolve the seed, generate and store."""
        self.check_size(args.width, args.height)
        self.check_steps(args.steps)
        _check_text("prompt", args.prompt)
        args = args.model_copy(update={"seed": _resolve_seed(args.seed)})
        started = time.perf_counter()
        generated = await self.backend.text_to_image(args)
        return await self.finish(ToolName.TEXT_TO_IMAGE, generated, args, time.perf_counter() - started, look=look)

    async def edit_image(self, args: EditImageInput, *, look: bool = False) -> CallToolResult:
        """Check limits, load the source, edit and store."""
        self.check_steps(args.steps)
        _check_text("instruction", args.instruction)
        args = args.model_copy(update={"seed": _resolve_seed(args.seed)})
        async with self.sources(ToolName.EDIT_IMAGE, [args.image]) as sources:
            started = time.perf_counter()
            generated = await self.backend.edit_image(args, sources[0])
            elapsed = time.perf_counter() - started
            return await self.finish(ToolName.EDIT_IMAGE, generated, args, elapsed, look=look)

    async def reference_to_image(self, args: ReferenceToImageInput, *, look: bool = False) -> CallToolResult:
        """Check limits, load the references, generate and store."""
        self.check_size(args.width, args.height)
        self.check_steps(args.steps)
        _check_text("prompt", args.prompt)
        args = args.model_copy(update={"seed": _resolve_seed(args.seed)})
        async with self.sources(ToolName.REFERENCE_TO_IMAGE, args.references) as references:
            started = time.perf_counter()
            generated = await self.backend.reference_to_image(args, references)
            elapsed = time.perf_counter() - started
            return await self.finish(ToolName.REFERENCE_TO_IMAGE, generated, args, elapsed, look=look)

    async def inspect_image(self, args: InspectImageInput) -> CallToolResult:
        """Describe a stored image."""
        async with self.sources(ToolName.INSPECT_IMAGE, [args.image]) as sources:
            result = await self._inspect(sources[0], args)
        return tool_result(result, None)

    async def _inspect(self, source: SourceImage, args: InspectImageInput | None = None) -> InspectResult:
        """The back end's report on one image (no questions unless ``args`` has some), timed."""
        started = time.perf_counter()
        result = await self.backend.inspect_image(args or InspectImageInput(image=source.handle, questions=[]), source)
        return result.model_copy(update={"generator_s": time.perf_counter() - started})

    def settle(self, timeout: float | None = 120.0) -> None:
        """Put every pending write on disk and retire this server's journal (a session is over).

        Raises:
            TimeoutError: Writes are still pending after ``timeout`` seconds.

        """
        retired = self.journal.close()
        self.store.flush(timeout)
        if retired is not None and not retired.wait(timeout):
            raise TimeoutError(f"the journal was not retired within {timeout} s")

    async def recover(self, handle: str) -> bool:
        """Make a lost image again from its journal recipe (see :func:`recovery.recover`); whether it is stored now."""
        return await recover(self, handle)

    async def upload_image(self, args: UploadImageInput) -> CallToolResult:
        """Check and store an uploaded image file."""
        limit = self.settings.max_input_bytes
        # Refuse before decoding base64: 4 characters carry 3 bytes.
        if len(args.data) // 4 * 3 > limit + 3:
            raise LimitExceededError(
                f"upload is about {len(args.data) // 4 * 3} bytes, over the limit max_input_bytes {limit}"
            )
        try:
            data = base64.b64decode(args.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ToolError("data is not valid base64: send the image file's bytes base64-encoded") from exc
        allowed = self.settings.allowed_input_formats
        # Magic bytes first, here as in the decoder: a refused format never reaches a worker thread.
        if (found := sniff_format(data[:16])) not in allowed:
            raise UnsupportedImageError(format_refusal(found, allowed))
        store = self.store
        # The header's claim, checked against max_decoded_pixels before anything is decoded.
        header = await anyio.to_thread.run_sync(
            functools.partial(
                probe_image,
                data,
                max_bytes=store.max_input_bytes,
                max_pixels=store.max_decoded_pixels,
                allowed=store.allowed_formats,
            )
        )
        # Stored no larger than a tool may make an image: what comes later decodes it cheaply.
        kept = math.prod(self.fit.size(header.width, header.height))
        async with self.pixels.hold(header.pixels + kept, ToolName.UPLOAD_IMAGE):
            stored = await anyio.to_thread.run_sync(functools.partial(store.put_bytes, data, fit=self.fit))
        result = ImageResult(
            handle=stored.handle,
            width=stored.width,
            height=stored.height,
            mime_type=stored.mime_type,
            bytes=stored.bytes,
            seed=0,
            tool=ToolName.UPLOAD_IMAGE,
            uri=f"image://{stored.handle}",
        )
        return tool_result(result, None)


def _resolve_seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else seed


def _check_text(name: str, value: str) -> None:
    if not value.strip():
        raise ToolError(f"{name} is empty: describe what you want in words")
