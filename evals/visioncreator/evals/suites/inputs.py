"""A task's input images: rendered by the synthetic environment, or read from a user's file, into a store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from visioncreator.evals.suites.model import InputImage, SuiteError
from visioncreator.tool_servers import Generated, ImageStore, TextToImageInput, ToolServerError, decode_image
from visioncreator.tool_servers.synthetic import Scene, SyntheticBackend, SyntheticSettings

__all__ = ["input_scene", "materialize_input"]


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


async def materialize_input(store: ImageStore, image: InputImage, base_dir: Path) -> tuple[str, Scene | None]:
    """Put a task's input image into a store the tool servers share; its handle and ground-truth scene.

    A ``prompt`` image is rendered by the synthetic environment with faults off (its scene is the
    ground truth). A ``path`` image is read from ``base_dir / path``, decoded by the safe decoder
    within the store's limits, and stored without ground truth (any truth chunk in the file is
    ignored: a user's file cannot claim what is in it).

    Args:
        store: The image store.
        image: The input image of a task.
        base_dir: The suite file's folder.

    Returns:
        The handle, and the scene (``None`` for a file).

    Raises:
        SuiteError: The file cannot be read, is too large, or is not a supported image.

    """
    if image.path is None:
        generated = await _render(image)
        stored = store.put(generated.image, generated.truth)
        return stored.handle, generated.truth.scene if generated.truth is not None else None
    file = base_dir / image.path
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
