"""The five MCP image tools as the model sees them: signatures, docstrings, titles, annotations.

Each tool validates its arguments with its input model from ``schemas.py`` and runs through the
``ToolRunner`` (see the design notes of ``server.py``). The order of :func:`image_tools` is the
order of ``tools/list``; a snapshot test pins it with the names, descriptions and schemas.

Annotations are hints for hosts (what to confirm with a user, what is safe to retry), so each
says what the tool truly does: every tool works on this server's own image store and back end
(``openWorldHint`` false); no tool changes or deletes an image it did not make (the store is
content-addressed: a new image gets a new handle), so none is destructive.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from visioncreator.tool_servers.arguments import describe_invalid
from visioncreator.tool_servers.mcp_compat import (
    CallToolResult,
    Context,
    Tool,
    ToolAnnotations,
    ToolError,
    mcp_model,
    request_meta,
)
from visioncreator.tool_servers.names import LOOK_META_KEY, ToolName
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
from visioncreator.tool_servers.tools import ToolRunner

__all__ = ["image_tools"]

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

# The three generators add a new image and change nothing else. Not idempotent: without a seed
# each call makes a new variation (with one, the same image and handle come back, but the hint
# is about the tool, and the seed is optional).
_GENERATES = mcp_model(
    ToolAnnotations, read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
# Looking at an image changes nothing, so looking again changes nothing either.
_LOOKS = mcp_model(ToolAnnotations, read_only_hint=True, idempotent_hint=True, open_world_hint=False)
# An upload adds an image; the same file again gives the same handle and adds nothing more.
_STORES = mcp_model(
    ToolAnnotations, read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


def _validate(tool: str, model: type[_ModelT], **fields: Any) -> _ModelT:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise ToolError(describe_invalid(tool, exc)) from exc


def _looks(ctx: Context | None) -> bool:
    """Whether the request's ``_meta`` asks for the new image's inspection too (:data:`LOOK_META_KEY`)."""
    return bool(request_meta(ctx).get(LOOK_META_KEY))


def _tool(registry: list[Tool], title: str, annotations: ToolAnnotations) -> Callable[[_FnT], _FnT]:
    """Add a tool whose description is its docstring without the source indentation.

    The description is the text the model reads on every turn: indentation would only cost tokens.
    The input schema says ``additionalProperties: false``: the server refuses unknown arguments.
    """

    def register(fn: _FnT) -> _FnT:
        description = inspect.cleandoc(fn.__doc__ or "")
        tool = Tool.from_function(
            fn, title=title, description=description, annotations=annotations, structured_output=True
        )
        tool.parameters["additionalProperties"] = False
        registry.append(tool)
        return fn

    return register


def _register_prompt_tools(registry: list[Tool], tools: ToolRunner) -> None:
    """The tool that makes an image from a prompt alone."""

    @_tool(registry, "Text to image", _GENERATES)
    async def text_to_image(
        prompt: Prompt,
        width: Size = 512,
        height: Size = 512,
        seed: Seed = None,
        steps: Steps = None,
        guidance: Guidance = None,
        preview: Preview = False,
        ctx: Context | None = None,
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
            ToolName.TEXT_TO_IMAGE,
            TextToImageInput,
            prompt=prompt,
            width=width,
            height=height,
            seed=seed,
            steps=steps,
            guidance=guidance,
            preview=preview,
        )
        return await tools.run(ToolName.TEXT_TO_IMAGE, lambda: tools.text_to_image(args, look=_looks(ctx)))


def _register_derived_image_tools(registry: list[Tool], tools: ToolRunner) -> None:
    """The tools that make a new image from earlier ones: an edit, or new scenes with the same subjects."""

    @_tool(registry, "Edit image", _GENERATES)
    async def edit_image(
        image: Handle,
        instruction: _Instruction,
        seed: Seed = None,
        steps: Steps = None,
        guidance: Guidance = None,
        preview: Preview = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ImageResult]:
        """Change an existing image as an instruction says, keeping everything else the same.

        Use it to fix a fault you found in an image (a missing object, a wrong colour or count, misspelled
        text, an object in the wrong place) and for editing requests ("make the sky stormy", "make the car
        blue", "add a cat left of the dog", "remove the lamp", "turn it into a watercolor"). One change per
        call works best. Returns a NEW handle; the input image stays as it was.
        """
        args = _validate(
            ToolName.EDIT_IMAGE,
            EditImageInput,
            image=image,
            instruction=instruction,
            seed=seed,
            steps=steps,
            guidance=guidance,
            preview=preview,
        )
        return await tools.run(ToolName.EDIT_IMAGE, lambda: tools.edit_image(args, look=_looks(ctx)))

    @_tool(registry, "Image from references", _GENERATES)
    async def reference_to_image(
        prompt: Prompt,
        references: _References,
        width: Size = 512,
        height: Size = 512,
        seed: Seed = None,
        steps: Steps = None,
        guidance: Guidance = None,
        preview: Preview = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ImageResult]:
        """Make a new image whose subjects look the same as in the reference images.

        Use reference_to_image for every image after the first in a multi-image task (story panels, several
        views of one product, a series with one character) so the subjects stay the same: pass the handles
        of the earlier images (1 to 4) as references and describe the new scene in the prompt. Subjects keep
        their identity (kind, colour, pattern) from the references. Returns a handle, like text_to_image.
        """
        args = _validate(
            ToolName.REFERENCE_TO_IMAGE,
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
        return await tools.run(ToolName.REFERENCE_TO_IMAGE, lambda: tools.reference_to_image(args, look=_looks(ctx)))


def _register_store_tools(registry: list[Tool], tools: ToolRunner) -> None:
    """The tools that read an image of the store, or add one to it."""

    @_tool(registry, "Inspect image", _LOOKS)
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
        args = _validate(ToolName.INSPECT_IMAGE, InspectImageInput, image=image, questions=questions)
        return await tools.run(ToolName.INSPECT_IMAGE, lambda: tools.inspect_image(args))

    @_tool(registry, "Upload image", _STORES)
    async def upload_image(data: _UploadData) -> Annotated[CallToolResult, ImageResult]:
        """Add an image file to the image store and get its handle.

        Use it when a task comes with an image as a file rather than a handle: send the PNG, JPEG or WEBP
        file base64-encoded, then pass the returned handle to edit_image, reference_to_image or
        inspect_image. Returns a handle like the other tools (seed is 0). Files over the server's size or
        pixel limits are refused.
        """
        args = _validate(ToolName.UPLOAD_IMAGE, UploadImageInput, data=data)
        return await tools.run(ToolName.UPLOAD_IMAGE, lambda: tools.upload_image(args))


def image_tools(tools: ToolRunner) -> list[Tool]:
    """The five image tools, each running through ``tools``, in the order of ``tools/list``.

    Args:
        tools: Runs each validated call under admission control, the concurrency cap and the timeout.

    Returns:
        The tools, ready for ``MCPServer(tools=...)``.

    """
    registry: list[Tool] = []
    _register_prompt_tools(registry, tools)
    _register_derived_image_tools(registry, tools)
    _register_store_tools(registry, tools)
    return registry
