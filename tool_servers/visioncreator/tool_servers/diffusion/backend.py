"""``DiffusersBackend``: the four tools over diffusers pipelines named by a registry, with micro-batching.

The same class is the ``diffusers`` back end (packaged or user registry, real weights) and the
``tiny`` back end (a registry pointing at random tiny pipelines): CI runs the real code path.

Each call is checked against its model's limits on the event loop (a bad size or step count
fails at once, naming the limit), then queued on a :class:`MicroBatcher` keyed by everything a
pipeline call must share (model, size, steps, guidance). A batch runs in a worker thread; a
step callback counts steps and stops the pipeline when every caller of the batch has gone.
"""

from __future__ import annotations

import importlib
import inspect
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Literal

import anyio.to_thread
from PIL import Image

from visioncreator.tool_servers.backend import Generated, SourceImage
from visioncreator.tool_servers.diffusion.batching import MicroBatcher, Stop
from visioncreator.tool_servers.diffusion.composite import tile_references
from visioncreator.tool_servers.diffusion.pipelines import ModelNotAvailableError, PipelineCache, local_source
from visioncreator.tool_servers.diffusion.registry import TOOLS, ModelEntry, Registry
from visioncreator.tool_servers.diffusion.settings import DiffusionSettings
from visioncreator.tool_servers.names import ToolName
from visioncreator.tool_servers.schemas import (
    EditImageInput,
    InspectImageInput,
    InspectResult,
    ReferenceToImageInput,
    TextToImageInput,
)

__all__ = ["BatchStats", "DiffusersBackend"]

_Tool = Literal[ToolName.TEXT_TO_IMAGE, ToolName.EDIT_IMAGE, ToolName.REFERENCE_TO_IMAGE]


@dataclass(frozen=True, slots=True)
class _Key:
    """What requests must share to run in one pipeline call."""

    model: str
    width: int
    height: int
    steps: int
    guidance: float
    solo: int = 0  # non-zero (unique) for calls that cannot share a batch


@dataclass(frozen=True, slots=True)
class _Request:
    prompt: str
    seed: int
    images: tuple[Image.Image, ...] = ()


@dataclass(slots=True)
class BatchStats:
    """Counters of the work done so far (read them, don't write them)."""

    batches: int = 0
    """Pipeline calls started."""
    images: int = 0
    """Images made (requests served by finished calls)."""
    steps: int = 0
    """Denoising steps run, counted by the step callback; a step serves a whole batch."""
    cancelled: int = 0
    """Pipeline calls stopped early because every caller of the batch had gone."""
    batch_sizes: list[int] = field(default_factory=list)
    """Size of each batch started, in order."""


class DiffusersBackend:
    """An :class:`~visioncreator.tool_servers.backend.ImageBackend` over diffusers pipelines.

    Args:
        registry: Which model serves each tool, with its limits.
        settings: Device, dtype, offload, batching and step limits.
        name: The back end's name in tool errors and logs (``diffusers`` or ``tiny``).

    """

    def __init__(self, registry: Registry, settings: DiffusionSettings, *, name: str = "diffusers") -> None:
        self.name = name
        self.registry = registry
        self.settings = settings
        self.stats = BatchStats()
        self._pipelines = PipelineCache(settings)
        self._solo = count(1)
        self._batcher: MicroBatcher[_Key, _Request, Generated] = MicroBatcher(
            self._run_batch, limit=self._limit, wait_s=settings.batch_wait_ms / 1000.0
        )

    # -- the tools ---------------------------------------------------------------------------

    async def text_to_image(self, args: TextToImageInput) -> Generated:
        """Make a new image from a prompt with the ``text_to_image`` model."""
        name, entry = self._model(ToolName.TEXT_TO_IMAGE)
        entry.check_size(name, args.width, args.height)
        key = self._key(name, entry, args.width, args.height, args.steps, args.guidance)
        return await self._batcher.submit(key, _Request(args.prompt, _seed(args.seed)))

    async def edit_image(self, args: EditImageInput, source: SourceImage) -> Generated:
        """Edit ``source`` as the instruction says; the result has the source's size, fitted to the model."""
        name, entry = self._model(ToolName.EDIT_IMAGE)
        width, height = entry.fit_size(source.image.width, source.image.height)
        key = self._key(name, entry, width, height, args.steps, args.guidance)
        images: tuple[Image.Image, ...] = ()
        if entry.image_input != "none":
            images = (_rgb(source.image, width, height),)
        return await self._batcher.submit(key, _Request(args.instruction, _seed(args.seed), images))

    async def reference_to_image(self, args: ReferenceToImageInput, references: list[SourceImage]) -> Generated:
        """Make a new image from a prompt and 1-4 references, as the model's ``image_input`` says."""
        name, entry = self._model(ToolName.REFERENCE_TO_IMAGE)
        entry.check_size(name, args.width, args.height)
        key = self._key(name, entry, args.width, args.height, args.steps, args.guidance)
        pictures = [reference.image for reference in references]
        images: tuple[Image.Image, ...] = ()
        if entry.image_input == "list":
            images = tuple(picture.convert("RGB") for picture in pictures)
        elif entry.image_input in ("single", "composite"):
            images = (tile_references(pictures, args.width, args.height),)
        return await self._batcher.submit(key, _Request(args.prompt, _seed(args.seed), images))

    async def inspect_image(self, args: InspectImageInput, image: SourceImage) -> InspectResult:
        """Describe a real image with the offline detectors, if installed; else say it cannot be analysed."""
        try:
            detectors = importlib.import_module("visioncreator.tool_servers.detectors")
            inspect_real = detectors.inspect_real
        except (ImportError, AttributeError):
            return InspectResult(
                handle=image.handle,
                width=image.image.width,
                height=image.image.height,
                style="photo",
                background="unknown",
                text=None,
                objects=[],
                counts={},
                known=False,
            )
        result = await anyio.to_thread.run_sync(inspect_real, args, image)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, InspectResult):
            raise TypeError(f"inspect_real returned {type(result).__name__}, not InspectResult")
        return result

    # -- management ---------------------------------------------------------------------------

    @property
    def device(self) -> str:
        """The torch device the pipelines run on (asks torch the first time)."""
        return self._pipelines.device

    def missing_models(self) -> dict[str, str]:
        """Models the tools use whose weights are not on disk: model name -> what to do about it."""
        problems: dict[str, str] = {}
        for name in sorted(set(self.registry.tools.values())):
            try:
                local_source(name, self.registry.models[name])
            except ModelNotAvailableError as exc:
                problems[name] = str(exc)
        return problems

    def models_in_use(self) -> list[str]:
        """The models the registry's tools use, in tool order, each once (what a preload loads)."""
        return list(dict.fromkeys(self.registry.tools[tool] for tool in TOOLS))

    def load_model(self, name: str) -> None:
        """Load model ``name`` now (blocking); a no-op when it is loaded.

        Raises:
            KeyError: A name the registry does not have.
            ModelNotAvailableError: Its weights are not on disk.

        """
        self._pipelines.get(name, self.registry.models[name])

    def loaded_models(self) -> list[str]:
        """The models loaded so far, by name."""
        return self._pipelines.loaded()

    def warm_up(self, tools: Sequence[str] = TOOLS) -> None:
        """Load the models of ``tools`` now (blocking) instead of on first use.

        Raises:
            KeyError: A name that is not an image tool.
            ModelNotAvailableError: A model's weights are not on disk.

        """
        for tool in tools:
            name, entry = self.registry.for_tool(tool)
            self._pipelines.get(name, entry)

    async def aclose(self) -> None:
        """Stop the batcher: queued calls are cancelled and a running batch is stopped."""
        await self._batcher.aclose()

    # -- internals -----------------------------------------------------------------------------

    def _model(self, tool: _Tool) -> tuple[str, ModelEntry]:
        return self.registry.for_tool(tool)

    def _key(
        self, name: str, entry: ModelEntry, width: int, height: int, steps: int | None, guidance: float | None
    ) -> _Key:
        return _Key(
            model=name,
            width=width,
            height=height,
            steps=entry.resolve_steps(name, steps, self.settings.max_steps),
            guidance=entry.resolve_guidance(name, guidance),
            solo=next(self._solo) if entry.image_input == "list" else 0,
        )

    def _limit(self, key: _Key) -> int:
        entry = self.registry.models[key.model]
        if key.solo:
            return 1
        return min(self.settings.max_batch, entry.max_batch or self.settings.max_batch)

    def _run_batch(self, key: _Key, requests: Sequence[_Request], stop: Stop) -> list[Generated]:
        """Run one pipeline call for ``requests`` (in the worker thread)."""
        stop.check()
        entry = self.registry.models[key.model]
        pipeline = self._pipelines.get(key.model, entry)
        stop.check()  # loading can take minutes: callers may have gone meanwhile
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(requests))
        stats = self.stats

        def on_step(_pipeline: Any, _step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            stats.steps += 1
            if stop.is_set():
                stats.cancelled += 1
                stop.check()
            return tensors

        output = pipeline(**_call_arguments(entry, key, requests), callback_on_step_end=on_step)
        images: list[Image.Image] = list(output.images)
        self.stats.images += len(requests)
        return [
            Generated(image=image.convert("RGB"), seed=request.seed)
            for image, request in zip(images, requests, strict=True)
        ]


def _call_arguments(entry: ModelEntry, key: _Key, requests: Sequence[_Request]) -> dict[str, Any]:
    import torch

    # CPU generators: the same seed gives the same starting noise on every device.
    arguments: dict[str, Any] = {
        "prompt": [request.prompt for request in requests],
        "num_inference_steps": key.steps,
        entry.guidance_arg: key.guidance,
        "generator": [torch.Generator("cpu").manual_seed(request.seed) for request in requests],
        "output_type": "pil",
    }
    for name, value in entry.extra.items():
        arguments[name] = [value] * len(requests) if name == "negative_prompt" else value
    if entry.takes_size:
        arguments["width"], arguments["height"] = key.width, key.height
    if entry.image_input in ("single", "composite"):
        arguments["image"] = [request.images[0] for request in requests]
    elif entry.image_input == "list":
        (request,) = requests  # such keys are solo: one request per call
        arguments["image"] = list(request.images)
    return arguments


def _rgb(image: Image.Image, width: int, height: int) -> Image.Image:
    rgb = image.convert("RGB")
    return rgb if rgb.size == (width, height) else rgb.resize((width, height), Image.Resampling.LANCZOS)


def _seed(seed: int | None) -> int:
    # The server resolves seeds before calling a back end; a direct caller may not have.
    return secrets.randbelow(2**31) if seed is None else seed
