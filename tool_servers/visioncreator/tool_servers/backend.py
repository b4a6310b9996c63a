"""The image back-end interface the tool server calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from visioncreator.tool_servers.scene import GroundTruth

if TYPE_CHECKING:
    from PIL.Image import Image

    from visioncreator.tool_servers.schemas import (
        EditImageInput,
        InspectImageInput,
        InspectResult,
        ReferenceToImageInput,
        TextToImageInput,
    )


@dataclass(frozen=True, slots=True)
class SourceImage:
    """An input image handed to a back end: decoded pixels plus what the store knows."""

    handle: str
    image: Image
    truth: GroundTruth | None = None


@dataclass(frozen=True, slots=True)
class Generated:
    """What a back end returns for an image-producing tool."""

    image: Image
    seed: int
    truth: GroundTruth | None = None
    changed: bool | None = None
    """For an edit: whether the image differs from its source; ``None`` when the back end cannot tell."""


@runtime_checkable
class ImageBackend(Protocol):
    """An image generator behind the four tools.

    Implementations must be deterministic for a given seed. ``seed`` in each input is
    already resolved by the server (never ``None`` when a back end sees it).
    """

    name: str

    async def text_to_image(self, args: TextToImageInput) -> Generated:
        """Make a new image from a prompt."""
        ...

    async def edit_image(self, args: EditImageInput, source: SourceImage) -> Generated:
        """Change an image as the instruction says."""
        ...

    async def reference_to_image(self, args: ReferenceToImageInput, references: list[SourceImage]) -> Generated:
        """Make a new image whose subjects match those of the references."""
        ...

    async def inspect_image(self, args: InspectImageInput, image: SourceImage) -> InspectResult:
        """Describe what is in an image."""
        ...
