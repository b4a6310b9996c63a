"""The visioncreator MCP tool server: five image tools over an ``ImageBackend`` and an ``ImageStore``.

Design choices:

- Tool parameters are exactly the fields of the input models in ``schemas.py`` (same annotated
  types), and each call is validated once more with that model, so the JSON schema a client
  sees and the contract the back end gets cannot drift apart.
- Every failure a caller can cause becomes a ``ToolError`` whose message says what was wrong
  and what to do; an unexpected back-end exception becomes a short ``ToolError`` too, so the
  server never crashes on a call.
- Admission control: at most ``max_concurrency`` calls run and ``max_queue`` wait; a call beyond
  that is refused at once (before any await) with a tool error naming ``max_queue``, so a flood
  of calls gets fast answers instead of piling up work that would time out anyway.
- The back end is awaited directly: the synthetic back end renders in milliseconds, and a
  heavy back end (diffusers) owns its own thread or process offloading. The store's PNG
  encode, decode and file I/O run in a worker thread (``anyio.to_thread``) because they grow
  with image size and would otherwise stall other sessions.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from visioncreator.tool_servers.backend import ImageBackend
from visioncreator.tool_servers.errors import (
    UnknownHandleError,
)
from visioncreator.tool_servers.names import ToolName
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
from visioncreator.tool_servers.tools import ToolRunner, default_backend

__all__ = ["SERVER_NAME", "build_server"]

SERVER_NAME = "visioncreator-tools"
_log = logging.getLogger(__name__)
_ModelT = TypeVar("_ModelT", bound=BaseModel)
_FnT = TypeVar("_FnT", bound=Callable[..., Any])

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


def _validate(model: type[_ModelT], **fields: Any) -> _ModelT:
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
        raise ToolError(f"invalid arguments: {problems}") from exc


def _tool(server: MCPServer, annotations: ToolAnnotations | None = None) -> Callable[[_FnT], _FnT]:
    """Register a tool whose description is its docstring without the source indentation.

    The description is the text the model reads on every turn: indentation would only cost tokens.
    """

    def register(fn: _FnT) -> _FnT:
        description = inspect.cleandoc(fn.__doc__ or "")
        server.tool(description=description, annotations=annotations, structured_output=True)(fn)
        return fn

    return register


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
        allowed_formats=settings.allowed_input_formats,
    )
    tools = ToolRunner(settings, backend or default_backend(settings), store)
    server = MCPServer(
        SERVER_NAME,
        instructions=(
            "Image tools. Images are named by handles ('img_' + 24 hex digits) that tools return; pass "
            "handles, never file paths or bytes. Read image://{handle} for the PNG and truth://{handle} for "
            "the synthetic ground truth."
        ),
    )

    @_tool(server)
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
        return await tools.run(ToolName.TEXT_TO_IMAGE, lambda: tools.text_to_image(args))

    @_tool(server)
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
        return await tools.run(ToolName.EDIT_IMAGE, lambda: tools.edit_image(args))

    @_tool(server)
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
        return await tools.run(ToolName.REFERENCE_TO_IMAGE, lambda: tools.reference_to_image(args))

    @_tool(server, annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
    async def inspect_image(image: Handle, questions: _Questions) -> Annotated[CallToolResult, InspectResult]:
        """Look at an image and report what is in it.

        Returns every object with its kind, colour, bounding box and identity signature, the number of
        objects per kind, the rendered text, the style and the background, and answers to your optional
        questions. Use it to check each new image against the request before you accept it, and to compare
        images of a multi-image task: the same identity means the same individual, a different one is
        identity drift. known=false means the objects cannot be listed (an uploaded photo, a real generated
        image): the empty object list then says nothing about the image; look at `analysis` instead, which
        holds what offline detectors found (dominant colours, text read by OCR, faces and people, ImageNet
        labels, a quality score) and which detectors ran.
        """
        args = _validate(InspectImageInput, image=image, questions=questions)
        return await tools.run(ToolName.INSPECT_IMAGE, lambda: tools.inspect_image(args))

    @_tool(server)
    async def upload_image(data: _UploadData) -> Annotated[CallToolResult, ImageResult]:
        """Add an image file to the image store and get its handle.

        Use it when a task comes with an image as a file rather than a handle: send the PNG, JPEG or WEBP
        file base64-encoded, then pass the returned handle to edit_image, reference_to_image or
        inspect_image. Returns a handle like the other tools (seed is 0). Files over the server's size or
        pixel limits are refused.
        """
        args = _validate(UploadImageInput, data=data)
        return await tools.run(ToolName.UPLOAD_IMAGE, lambda: tools.upload_image(args))

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
