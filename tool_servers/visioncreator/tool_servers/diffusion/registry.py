"""The model registry: which diffusers pipeline and weights serve each tool, and within which limits.

A registry is a TOML file with two tables::

    [tools]                      # tool name -> model name
    text_to_image = "sd-turbo"

    [models.sd-turbo]            # one entry per model
    pipeline = "StableDiffusionPipeline"
    source = "stabilityai/sd-turbo"   # a Hugging Face hub id or a local directory
    default_steps = 1
    ...

The package ships a default (``models.toml``, sized for a small GPU, with big-GPU entries ready to
switch to). A user file is merged over it: its ``[tools]`` keys replace the default's, and each of
its ``[models.NAME]`` tables replaces the default entry of that name whole.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visioncreator.tool_servers.errors import LimitExceededError, ToolServerError
from visioncreator.tool_servers.names import IMAGE_TOOLS, POLICY_TOOLS

__all__ = ["TOOLS", "ModelEntry", "Registry", "RegistryError", "load_registry"]

TOOLS: tuple[str, ...] = tuple(t for t in POLICY_TOOLS if t in IMAGE_TOOLS)
"""The image-producing tools a registry maps to models, in the server's order."""

ExtraValue = str | int | float | bool


class RegistryError(ToolServerError, ValueError):
    """A registry file that does not parse or does not describe usable models."""


class ModelEntry(BaseModel):
    """One model: how to load it, how to call it, and the limits of its arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: str = Field(description="diffusers pipeline class name, e.g. 'StableDiffusionPipeline'.")
    source: str = Field(description="Hugging Face hub id ('org/name') or a local directory of a saved pipeline.")
    variant: str | None = Field(default=None, description="Weights variant to load, e.g. 'fp16'.")
    image_input: Literal["none", "single", "composite", "list"] = Field(
        default="none",
        description="How input images reach the pipeline: none (text only); single (the one source image); "
        "composite (the references tiled into one image of the output size); list (all references as a list, "
        "for multi-image pipelines such as Qwen-Image-Edit-Plus; such calls are not batched).",
    )
    takes_size: bool = Field(default=True, description="Whether the pipeline takes width and height arguments.")
    guidance_arg: str = Field(
        default="guidance_scale", description="Keyword the guidance value goes to (Qwen-Image: 'true_cfg_scale')."
    )
    extra: dict[str, ExtraValue] = Field(
        default_factory=dict, description="Further fixed keyword arguments, e.g. strength or image_guidance_scale."
    )
    min_width: int = Field(default=256, ge=8, description="Smallest width in pixels.")
    max_width: int = Field(default=1024, ge=8, description="Largest width in pixels.")
    min_height: int = Field(default=256, ge=8, description="Smallest height in pixels.")
    max_height: int = Field(default=1024, ge=8, description="Largest height in pixels.")
    multiple_of: int = Field(default=8, ge=1, description="Width and height must be multiples of this.")
    min_steps: int = Field(default=1, ge=1, description="Fewest denoising steps.")
    default_steps: int = Field(default=20, ge=1, description="Steps when the caller gives none.")
    max_steps: int = Field(default=50, ge=1, description="Most denoising steps.")
    default_guidance: float = Field(default=7.5, ge=0.0, description="Guidance when the caller gives none.")
    min_guidance: float = Field(default=0.0, ge=0.0, description="Smallest guidance accepted.")
    max_guidance: float = Field(default=20.0, ge=0.0, description="Largest guidance accepted.")
    max_batch: int | None = Field(
        default=None, ge=1, description="Most images per pipeline call for this model (caps the server's max_batch)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.min_width <= self.max_width or not self.min_height <= self.max_height:
            raise ValueError("min_width/min_height must not exceed max_width/max_height")
        if not self.min_steps <= self.default_steps <= self.max_steps:
            raise ValueError("need min_steps <= default_steps <= max_steps")
        if not self.min_guidance <= self.default_guidance <= self.max_guidance:
            raise ValueError("need min_guidance <= default_guidance <= max_guidance")
        return self

    def check_size(self, name: str, width: int, height: int) -> None:
        """Raise :class:`LimitExceededError` naming the first limit ``width`` x ``height`` breaks."""
        for axis, value, low, high in (
            ("width", width, self.min_width, self.max_width),
            ("height", height, self.min_height, self.max_height),
        ):
            if value < low:
                raise LimitExceededError(f"{axis} {value} is below min_{axis} {low} of model {name}")
            if value > high:
                raise LimitExceededError(f"{axis} {value} exceeds max_{axis} {high} of model {name}")
            if value % self.multiple_of:
                raise LimitExceededError(
                    f"{axis} {value} is not a multiple of {self.multiple_of} (multiple_of of model {name}); "
                    f"try {max(low, value - value % self.multiple_of)}"
                )

    def resolve_steps(self, name: str, steps: int | None, server_max: int) -> int:
        """The step count to run: the caller's, checked against the model's and the server's limits."""
        if steps is None:
            return min(self.default_steps, server_max)
        if steps < self.min_steps:
            raise LimitExceededError(f"steps {steps} is below min_steps {self.min_steps} of model {name}")
        if steps > self.max_steps:
            raise LimitExceededError(f"steps {steps} exceeds max_steps {self.max_steps} of model {name}")
        if steps > server_max:
            raise LimitExceededError(f"steps {steps} exceeds the server's max_steps {server_max}")
        return steps

    def resolve_guidance(self, name: str, guidance: float | None) -> float:
        """The guidance to use: the caller's, checked against the model's range."""
        if guidance is None:
            return self.default_guidance
        if guidance < self.min_guidance:
            raise LimitExceededError(
                f"guidance {guidance:g} is below min_guidance {self.min_guidance:g} of model {name}"
            )
        if guidance > self.max_guidance:
            raise LimitExceededError(
                f"guidance {guidance:g} exceeds max_guidance {self.max_guidance:g} of model {name}"
            )
        return guidance

    def fit_size(self, width: int, height: int) -> tuple[int, int]:
        """The size closest to ``width`` x ``height`` (same aspect) within the model's limits.

        Used for an edit, whose output takes the source image's size: a source too big or too
        small for the model is scaled, not refused.
        """
        scale = min(1.0, self.max_width / width, self.max_height / height)
        scale = max(scale, self.min_width / width, self.min_height / height)
        return (
            _snap(width * scale, self.min_width, self.max_width, self.multiple_of),
            _snap(height * scale, self.min_height, self.max_height, self.multiple_of),
        )


def _snap(value: float, low: int, high: int, multiple: int) -> int:
    snapped = round(value / multiple) * multiple
    lowest = math.ceil(low / multiple) * multiple
    highest = high // multiple * multiple
    return max(lowest, min(highest, snapped))


class Registry(BaseModel):
    """Which model serves each tool, and every model's entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tools: dict[str, str] = Field(description="Tool name -> model name.")
    models: dict[str, ModelEntry] = Field(description="Model name -> entry.")

    @model_validator(mode="after")
    def _tools_known(self) -> Self:
        for tool, model in self.tools.items():
            if tool not in TOOLS:
                raise ValueError(f"unknown tool {tool!r} in [tools]; known: {', '.join(TOOLS)}")
            if model not in self.models:
                raise ValueError(f"tool {tool} names model {model!r}, which has no [models.{model}] entry")
        missing = [tool for tool in TOOLS if tool not in self.tools]
        if missing:
            raise ValueError(f"no model for {', '.join(missing)} in [tools]")
        return self

    def for_tool(self, tool: str) -> tuple[str, ModelEntry]:
        """The name and entry of the model serving ``tool``."""
        name = self.tools[tool]
        return name, self.models[name]


def _packaged_text() -> str:
    return resources.files("visioncreator.tool_servers.diffusion").joinpath("models.toml").read_text("utf-8")


def _parse(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"registry {origin} is not valid TOML: {exc}") from exc


def load_registry(path: Path | None = None) -> Registry:
    """Load the packaged registry, with the file at ``path`` (if any) merged over it.

    Args:
        path: A user registry file; its ``[tools]`` keys and ``[models.NAME]`` tables override
            the packaged ones. A relative local ``source`` is taken relative to this file.

    Returns:
        The merged, validated registry.

    Raises:
        RegistryError: The file is missing, not TOML, or describes an inconsistent registry.

    """
    data = _parse(_packaged_text(), "models.toml (packaged)")
    tools: dict[str, Any] = dict(data.get("tools", {}))
    models: dict[str, Any] = dict(data.get("models", {}))
    origin = "models.toml (packaged)"
    if path is not None:
        origin = str(path)
        try:
            user = _parse(path.read_text("utf-8"), origin)
        except OSError as exc:
            raise RegistryError(f"cannot read registry {path}: {exc}") from exc
        tools.update(user.get("tools", {}))
        for name, entry in user.get("models", {}).items():
            models[name] = _anchor(entry, path.parent)
    try:
        return Registry(tools=tools, models=models)
    except ValidationError as exc:
        raise RegistryError(f"registry {origin} is invalid: {exc}") from exc


def _anchor(entry: Any, base: Path) -> Any:
    """Make a relative local ``source`` (``./x`` or ``../x``) relative to the registry file."""
    if isinstance(entry, dict):
        source = entry.get("source")
        if isinstance(source, str) and source.startswith(("./", "../")):
            return {**entry, "source": str((base / source).resolve())}
    return entry
