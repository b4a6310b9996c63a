"""The visioncreator MCP tool server: five image tools over an ``ImageBackend`` and an ``ImageStore``.

Design choices:

- Tool parameters are exactly the fields of the input models in ``schemas.py`` (same annotated
  types), and each call is validated once more with that model, so the JSON schema a client
  sees and the contract the back end gets cannot drift apart.
- Every failure a caller can cause becomes a ``ToolError`` whose message says what was wrong
  and what to do; an unexpected back-end exception becomes a short ``ToolError`` too, so the
  server never crashes on a call.
- The back end is awaited directly: the synthetic back end renders in milliseconds, and a
  heavy back end (diffusers) owns its own thread or process offloading. The store's PNG
  encode, decode and file I/O run in a worker thread (``anyio.to_thread``) because they grow
  with image size and would otherwise stall other sessions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from visioncreator.tool_servers.backend import Generated, ImageBackend, SourceImage
from visioncreator.tool_servers.errors import LimitExceededError, ToolServerError, UnknownHandleError
from visioncreator.tool_servers.schemas import (
    EditImageInput,
    Guidance,
    Handle,
    ImageResult,
    InspectImageInput,
    InspectResult,
    Preview,
    Prompt,
    ReferenceToImageInput,
    Seed,
    Size,
    Steps,
    TextToImageInput,
    UploadImageInput,
)
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.store import ImageStore

__all__ = ["SERVER_NAME", "build_server"]

SERVER_NAME = "visioncreator-tools"
_log = logging.getLogger(__name__)
_ModelT = TypeVar("_ModelT", bound=BaseModel)

# Inline field types of schemas.py, spelled once more here so the tool signatures match the
# input models field for field (a test compares the published schemas with the models').
_Instruction = Annotated[
    str, Field(min_length=1, max_length=2000, description="The change to make, e.g. 'make the car blue'.")
]
_References = Annotated[
    list[Handle],
    Field(min_length=1, max_length=4, description="Images whose subjects must look the same in the new image."),
]
_Questions = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=300)]],
    Field(default_factory=list, max_length=8, description="Optional questions, e.g. 'how many dogs?'."),
]
_UploadData = Annotated[str, Field(min_length=1, description="The image file, base64-encoded (PNG, JPEG or WEBP).")]
_MAX_ERROR_DETAIL = 300


def _default_backend(settings: ServerSettings) -> ImageBackend:
    if settings.backend != "synthetic":
        raise ValueError(f"unknown backend {settings.backend!r}: pass an ImageBackend to build_server")
    # Imported here so that importing the server module stays cheap.
    from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings

    if settings.fault_types is None:
        return SyntheticBackend(SyntheticSettings(fault_rate=settings.fault_rate))
    return SyntheticBackend(SyntheticSettings(fault_rate=settings.fault_rate, fault_types=settings.fault_types))


class _Tools:
    """The tool implementations, shared by the registered tool functions."""

    def __init__(self, settings: ServerSettings, backend: ImageBackend, store: ImageStore) -> None:
        self.settings = settings
        self.backend = backend
        self.store = store
        self._slots = asyncio.Semaphore(settings.max_concurrency)

    async def run(self, tool: str, work: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
        """Run one call under the concurrency cap and timeout, mapping every failure to a ToolError."""
        async with self._slots:
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

    async def source(self, handle: str) -> SourceImage:
        """Load a stored image for a back end."""
        stored, image = await anyio.to_thread.run_sync(self.store.load, handle)
        return SourceImage(handle=handle, image=image, truth=stored.truth)

    async def finish(self, tool: str, generated: Generated, preview: bool, generator_s: float) -> CallToolResult:
        """Store a generated image and build the tool result."""
        image = generated.image
        self.check_size(image.width, image.height)
        if self.settings.simulated_latency_s:
            await asyncio.sleep(self.settings.simulated_latency_s)
        stored = await anyio.to_thread.run_sync(self.store.put, image, generated.truth)
        if self.settings.call_log is not None:
            await anyio.to_thread.run_sync(self._log_call, tool, stored.handle, generated.seed)
        result = ImageResult(
            handle=stored.handle,
            width=stored.width,
            height=stored.height,
            mime_type=stored.mime_type,
            bytes=stored.bytes,
            seed=generated.seed,
            tool=tool,
            uri=f"image://{stored.handle}",
            generator_s=generator_s,
        )
        thumbnail = await anyio.to_thread.run_sync(self._preview, image) if preview else None
        return _result(result, thumbnail)

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
        return ImageContent(
            type="image", data=base64.b64encode(buffer.getvalue()).decode("ascii"), mime_type="image/png"
        )

    async def text_to_image(self, args: TextToImageInput) -> CallToolResult:
        self.check_size(args.width, args.height)
        _check_text("prompt", args.prompt)
        args = args.model_copy(update={"seed": _resolve_seed(args.seed)})
        started = time.perf_counter()
        generated = await self.backend.text_to_image(args)
        return await self.finish("text_to_image", generated, args.preview, time.perf_counter() - started)

    async def edit_image(self, args: EditImageInput) -> CallToolResult:
        _check_text("instruction", args.instruction)
        source = await self.source(args.image)
        args = args.model_copy(update={"seed": _resolve_seed(args.seed)})
        started = time.perf_counter()
        generated = await self.backend.edit_image(args, source)
        return await self.finish("edit_image", generated, args.preview, time.perf_counter() - started)

    async def reference_to_image(self, args: ReferenceToImageInput) -> CallToolResult:
        self.check_size(args.width, args.height)
        _check_text("prompt", args.prompt)
        references = [await self.source(handle) for handle in args.references]
        args = args.model_copy(update={"seed": _resolve_seed(args.seed)})
        started = time.perf_counter()
        generated = await self.backend.reference_to_image(args, references)
        return await self.finish("reference_to_image", generated, args.preview, time.perf_counter() - started)

    async def inspect_image(self, args: InspectImageInput) -> CallToolResult:
        source = await self.source(args.image)
        started = time.perf_counter()
        result = await self.backend.inspect_image(args, source)
        result = result.model_copy(update={"generator_s": time.perf_counter() - started})
        return _result(result, None)

    async def upload_image(self, args: UploadImageInput) -> CallToolResult:
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
        stored = await anyio.to_thread.run_sync(self.store.put_bytes, data)
        result = ImageResult(
            handle=stored.handle,
            width=stored.width,
            height=stored.height,
            mime_type=stored.mime_type,
            bytes=stored.bytes,
            seed=0,
            tool="upload_image",
            uri=f"image://{stored.handle}",
        )
        return _result(result, None)


def _resolve_seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else seed


def _check_text(name: str, value: str) -> None:
    if not value.strip():
        raise ToolError(f"{name} is empty: describe what you want in words")


def _result(model: BaseModel, thumbnail: ImageContent | None) -> CallToolResult:
    structured = model.model_dump(mode="json")
    content: list[ContentBlock] = [TextContent(type="text", text=json.dumps(structured))]
    if thumbnail is not None:
        content.append(thumbnail)
    return CallToolResult(content=content, structured_content=structured)


def _validate(model: type[_ModelT], **fields: Any) -> _ModelT:
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
        raise ToolError(f"invalid arguments: {problems}") from exc


def build_server(
    settings: ServerSettings, backend: ImageBackend | None = None, store: ImageStore | None = None
) -> MCPServer:
    """Build the MCP server with the five image tools and the ``image://`` and ``truth://`` resources.

    Args:
        settings: Limits, store location and back-end choice.
        backend: The image back end; the one ``settings.backend`` names when omitted.
        store: The image store; one at ``settings.store_root`` when omitted.

    Returns:
        A ready ``MCPServer``; run it with ``run_stdio_async`` or serve ``streamable_http_app``.

    """
    store = store or ImageStore(
        settings.store_root,
        max_input_bytes=settings.max_input_bytes,
        max_decoded_pixels=settings.max_decoded_pixels,
    )
    tools = _Tools(settings, backend or _default_backend(settings), store)
    server = MCPServer(
        SERVER_NAME,
        instructions=(
            "Image tools. Images are named by handles ('img_' + 24 hex digits) that tools return; pass "
            "handles, never file paths or bytes. Read image://{handle} for the PNG and truth://{handle} for "
            "the synthetic ground truth."
        ),
    )

    @server.tool(structured_output=True)
    async def text_to_image(
        prompt: Prompt,
        width: Size = 512,
        height: Size = 512,
        seed: Seed = None,
        steps: Steps = None,
        guidance: Guidance = None,
        preview: Preview = False,
    ) -> Annotated[CallToolResult, ImageResult]:
        """Make a new image from a text prompt.

        Use it for the first image of a task, and for any image that does not have to match an earlier one.
        Name everything the image must show: objects with counts and colours ("three red apples"), positions
        ("a dog left of a bench"), text to render in quotes (a sign that says "OPEN") and a style ("watercolor").
        Returns a handle (img_...) with the size and the seed used. Pass the handle to inspect_image to check
        the result, to edit_image to fix it, to reference_to_image to keep its subjects in later images, and
        list it in your answer. The same prompt and seed give the same image; omit the seed for a new variation.
        Set preview=true to also get a small thumbnail to look at.
        """
        args = _validate(
            TextToImageInput,
            prompt=prompt,
            width=width,
            height=height,
            seed=seed,
            steps=steps,
            guidance=guidance,
            preview=preview,
        )
        return await tools.run("text_to_image", lambda: tools.text_to_image(args))

    @server.tool(structured_output=True)
    async def edit_image(
        image: Handle,
        instruction: _Instruction,
        seed: Seed = None,
        steps: Steps = None,
        guidance: Guidance = None,
        preview: Preview = False,
    ) -> Annotated[CallToolResult, ImageResult]:
        """Change an existing image as an instruction says, keeping everything else the same.

        Use it to fix a fault you found in an image (a missing object, a wrong colour or count, misspelled
        text, an object in the wrong place) and for editing requests ("make the sky stormy", "make the car
        blue", "add a cat left of the dog", "remove the lamp", "turn it into a watercolor"). One change per
        call works best. Returns a NEW handle; the input image stays as it was.
        """
        args = _validate(
            EditImageInput,
            image=image,
            instruction=instruction,
            seed=seed,
            steps=steps,
            guidance=guidance,
            preview=preview,
        )
        return await tools.run("edit_image", lambda: tools.edit_image(args))

    @server.tool(structured_output=True)
    async def reference_to_image(
        prompt: Prompt,
        references: _References,
        width: Size = 512,
        height: Size = 512,
        seed: Seed = None,
        steps: Steps = None,
        guidance: Guidance = None,
        preview: Preview = False,
    ) -> Annotated[CallToolResult, ImageResult]:
        """Make a new image whose subjects look the same as in the reference images.

        Use reference_to_image for every image after the first in a multi-image task (story panels, several
        views of one product, a series with one character) so the subjects stay the same: pass the handles
        of the earlier images (1 to 4) as references and describe the new scene in the prompt. Subjects keep
        their identity (kind, colour, pattern) from the references. Returns a handle, like text_to_image.
        """
        args = _validate(
            ReferenceToImageInput,
            prompt=prompt,
            references=references,
            width=width,
            height=height,
            seed=seed,
            steps=steps,
            guidance=guidance,
            preview=preview,
        )
        return await tools.run("reference_to_image", lambda: tools.reference_to_image(args))

    @server.tool(structured_output=True, annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
    async def inspect_image(image: Handle, questions: _Questions) -> Annotated[CallToolResult, InspectResult]:
        """Look at an image and report what is in it.

        Returns every object with its kind, colour, bounding box and identity signature, the number of
        objects per kind, the rendered text, the style and the background, and answers to your optional
        questions. Use it to check each new image against the request before you accept it, and to compare
        images of a multi-image task: the same identity means the same individual, a different one is
        identity drift. known=false means the image cannot be analysed (an uploaded photo, say): its empty
        object list then says nothing about the image.
        """
        args = _validate(InspectImageInput, image=image, questions=questions)
        return await tools.run("inspect_image", lambda: tools.inspect_image(args))

    @server.tool(structured_output=True)
    async def upload_image(data: _UploadData) -> Annotated[CallToolResult, ImageResult]:
        """Add an image file to the image store and get its handle.

        Use it when a task comes with an image as a file rather than a handle: send the PNG, JPEG or WEBP
        file base64-encoded, then pass the returned handle to edit_image, reference_to_image or
        inspect_image. Returns a handle like the other tools (seed is 0). Files over the server's size or
        pixel limits are refused.
        """
        args = _validate(UploadImageInput, data=data)
        return await tools.run("upload_image", lambda: tools.upload_image(args))

    @server.resource("image://{handle}", mime_type="image/png", description="The PNG file of an image handle.")
    async def image_resource(handle: str) -> bytes:
        try:
            return await anyio.to_thread.run_sync(store.read_bytes, handle)
        except UnknownHandleError as exc:
            raise ResourceNotFoundError(str(exc)) from exc

    @server.resource(
        "truth://{handle}",
        mime_type="application/json",
        description="The synthetic ground truth of an image handle as JSON; null when it has none.",
    )
    async def truth_resource(handle: str) -> str:
        try:
            truth = await anyio.to_thread.run_sync(store.truth, handle)
        except UnknownHandleError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return "null" if truth is None else truth.model_dump_json()

    return server
