"""A task's input images: rendered by the synthetic environment, or read from a user's file, into a store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from visioncreator.evals.suites.model import InputImage, SuiteError
from visioncreator.graph import PathEscapeError, inside
from visioncreator.tool_servers import Generated, ImageStore, TextToImageInput, ToolServerError, decode_image
from visioncreator.tool_servers.synthetic import Scene, SyntheticBackend, SyntheticSettings

__all__ = ["ALLOW_OUTSIDE_FLAG", "input_file", "input_scene", "materialize_input"]

ALLOW_OUTSIDE_FLAG = "--allow-outside-inputs"
"""The ``visioncreator eval`` flag that lets a suite read input images outside its own folder."""


def input_file(base_dir: Path, path: str, *, allow_outside: bool = False) -> Path:
    """The file an input image's ``path`` names: resolved under ``base_dir`` (the suite file's folder).

    A suite is data from anyone: unless asked for, it may only read images beside it, so
    ``../../etc/passwd`` or a link that leads out of the folder is refused before anything is read.

    Args:
        base_dir: The suite file's folder.
        path: The input image's path, relative to it.
        allow_outside: Read the path wherever it leads (``EvalSettings.allow_outside_inputs``).

    Raises:
        SuiteError: The path (links followed) leaves ``base_dir`` and ``allow_outside`` is off.

    """
    if allow_outside:
        return base_dir / path
    try:
        return inside(base_dir, path)
    except PathEscapeError:
        raise SuiteError(
            f"input image path {path!r} leads outside the suite's folder {base_dir} (links followed): refused, "
            f"nothing read; keep input images beside the suite, or pass {ALLOW_OUTSIDE_FLAG} to allow it"
        ) from None


async def _render(image: InputImage) -> Generated:
    if image.prompt is None:
        raise SuiteError("this input image is a file, not a prompt: it has no synthetic scene")
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
    args = TextToImageInput(prompt=image.prompt, width=image.width, height=image.height, seed=image.seed)
    return await backend.text_to_image(args)


async def input_scene(image: InputImage) -> Scene:
    """The ground-truth scene of a prompt-rendered input image (what the environment renders, faults off).

    Raises:
        SuiteError: The image is a file (``path``): files have no ground truth.

    """
    generated = await _render(image)
    assert generated.truth is not None
    return generated.truth.scene


async def materialize_input(
    store: ImageStore, image: InputImage, base_dir: Path, *, allow_outside: bool = False
) -> tuple[str, Scene | None]:
    """Put a task's input image into a store the tool servers share; its handle and ground-truth scene.

    A ``prompt`` image is rendered by the synthetic environment with faults off (its scene is the
    ground truth). A ``path`` image is read from ``base_dir / path`` (see :func:`input_file`),
    decoded by the safe decoder within the store's limits, and stored without ground truth (any
    truth chunk in the file is ignored: a user's file cannot claim what is in it).

    Args:
        store: The image store.
        image: The input image of a task.
        base_dir: The suite file's folder.
        allow_outside: Let the path lead outside ``base_dir``.

    Returns:
        The handle, and the scene (``None`` for a file).

    Raises:
        SuiteError: The file leads outside ``base_dir``, cannot be read, is too large, or is not a
            supported image.

    """
    if image.path is None:
        generated = await _render(image)
        stored = store.put(generated.image, generated.truth)
        return stored.handle, generated.truth.scene if generated.truth is not None else None
    file = input_file(base_dir, image.path, allow_outside=allow_outside)
    try:
        data = await asyncio.to_thread(file.read_bytes)
        decoded = await asyncio.to_thread(
            decode_image,
            data,
            max_bytes=store.max_input_bytes,
            max_pixels=store.max_decoded_pixels,
            allowed=store.allowed_formats,
        )
    except OSError as exc:
        raise SuiteError(f"cannot read input image {file}: {exc.strerror or exc}") from exc
    except ToolServerError as exc:
        raise SuiteError(f"input image {file} is not usable: {exc}") from exc
    stored = await asyncio.to_thread(store.put, decoded, None)
    return stored.handle, None
