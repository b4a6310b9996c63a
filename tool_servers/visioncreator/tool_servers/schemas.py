"""Tool input and output schemas. They are the JSON schemas MCP clients see.

Field descriptions are read by models: keep them short and concrete.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.tool_servers.scene import Box, SceneObject

HANDLE_PATTERN = r"^img_[0-9a-f]{24}$"
Handle = Annotated[
    str,
    Field(
        pattern=HANDLE_PATTERN, description="An image handle returned by an earlier tool call: 'img_' + 24 hex digits."
    ),
]
Prompt = Annotated[str, Field(min_length=1, max_length=2000, description="What the image should show.")]
Size = Annotated[int, Field(ge=64, le=2048, description="Pixels; a multiple of 8 is best.")]
Seed = Annotated[
    int | None, Field(default=None, ge=0, le=2**31 - 1, description="Same seed, same image. Omit for a fresh one.")
]
Preview = Annotated[bool, Field(default=False, description="Also return a small inline PNG preview of the result.")]
Steps = Annotated[
    int | None,
    Field(default=None, ge=1, le=1000, description="Denoising steps; omit for the model's default (real models only)."),
]
Guidance = Annotated[
    float | None,
    Field(default=None, ge=0.0, le=50.0, description="Guidance scale; omit for the model's default."),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextToImageInput(_Input):
    """Arguments of ``text_to_image``."""

    prompt: Prompt
    width: Size = 512
    height: Size = 512
    seed: Seed = None
    steps: Steps = None
    guidance: Guidance = None
    preview: Preview = False


class EditImageInput(_Input):
    """Arguments of ``edit_image``."""

    image: Handle
    instruction: Annotated[
        str, Field(min_length=1, max_length=2000, description="The change to make, e.g. 'make the car blue'.")
    ]
    seed: Seed = None
    steps: Steps = None
    guidance: Guidance = None
    preview: Preview = False


class ReferenceToImageInput(_Input):
    """Arguments of ``reference_to_image``."""

    prompt: Prompt
    references: Annotated[
        list[Handle],
        Field(min_length=1, max_length=4, description="Images whose subjects must look the same in the new image."),
    ]
    width: Size = 512
    height: Size = 512
    seed: Seed = None
    steps: Steps = None
    guidance: Guidance = None
    preview: Preview = False


class InspectImageInput(_Input):
    """Arguments of ``inspect_image``."""

    image: Handle
    questions: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=300)]],
        Field(default_factory=list, max_length=8, description="Optional questions, e.g. 'how many dogs?'."),
    ]


class UploadImageInput(_Input):
    """Arguments of ``upload_image``."""

    data: Annotated[str, Field(min_length=1, description="The image file, base64-encoded (PNG, JPEG or WEBP).")]


class ImageResult(BaseModel):
    """What an image-producing tool returns."""

    handle: str = Field(description="Handle of the new image; pass it to other tools.")
    width: int = Field(description="Width of the new image in pixels.")
    height: int = Field(description="Height of the new image in pixels.")
    mime_type: str = Field(default="image/png", description="Media type of the image:// resource, always image/png.")
    bytes: int | None = Field(
        description="Size of the stored PNG; null when the server answered before writing it (image:// serves it "
        "either way).",
    )
    seed: int = Field(description="The seed used; reuse it to reproduce the image.")
    tool: str = Field(description="The tool that made the image.")
    uri: str = Field(description="MCP resource that serves the image bytes: image://{handle}.")
    generator_s: float = Field(
        default=0.0, description="Seconds the back end spent making the image (not queueing, storage or transport)."
    )
    changed: bool | None = Field(
        default=None,
        description="edit_image only, where the back end can tell: false when the edit left the image as it was "
        "(it asked for something the image already shows, or to change an object it lacks).",
    )


class Answer(BaseModel):
    """An answer to one ``inspect_image`` question."""

    question: str = Field(description="The question as it was asked.")
    answer: str = Field(description="The answer, in words or a number.")


class ColorShare(BaseModel):
    """One dominant colour of an image."""

    name: str = Field(description="Nearest colour name from the tool's colour vocabulary, e.g. 'blue'.")
    fraction: float = Field(ge=0.0, le=1.0, description="Share of the image's pixels nearest this colour, 0 to 1.")


class ColorStats(BaseModel):
    """Colour statistics of a whole image."""

    dominant: list[ColorShare] = Field(description="Most common colours, largest share first.")
    brightness: float = Field(ge=0.0, le=1.0, description="Mean luminance: 0 is black, 1 is white.")
    contrast: float = Field(ge=0.0, le=1.0, description="Standard deviation of luminance; below 0.05 is nearly flat.")
    saturation: float = Field(ge=0.0, le=1.0, description="Mean colour saturation: 0 is grey, 1 is vivid.")


class TextLine(BaseModel):
    """One line of text read from an image by OCR."""

    text: str = Field(description="The text of the line.")
    confidence: float = Field(ge=0.0, le=1.0, description="OCR confidence, 0 to 1.")
    box: Box = Field(description="Where the line is, in pixels: x0, y0, x1, y1.")


class Region(BaseModel):
    """A detected face or person."""

    box: Box = Field(description="Bounding box in pixels: x0, y0, x1, y1.")
    score: float | None = Field(default=None, description="Detector score where it gives one; higher is surer.")


class ImageLabel(BaseModel):
    """One ImageNet class the classifier sees in the image."""

    name: str = Field(description="ImageNet class name, or 'imagenet:<index>' when the names are not installed.")
    index: int = Field(ge=0, le=999, description="ImageNet-1k class index.")
    probability: float = Field(ge=0.0, le=1.0, description="The classifier's probability for this class, 0 to 1.")


class ImageAnalysis(BaseModel):
    """What off-the-shelf detectors found in an image that has no ground truth.

    A field is null when its detector did not run; see ``detectors`` for why.
    """

    colors: ColorStats | None = Field(default=None, description="Colour statistics.")
    text: list[TextLine] | None = Field(default=None, description="Text lines read by OCR; empty when none found.")
    faces: list[Region] | None = Field(
        default=None, description="Frontal faces found; small or turned faces are missed."
    )
    people: list[Region] | None = Field(
        default=None, description="Whole standing people found; close-ups and seated people are often missed."
    )
    labels: list[ImageLabel] | None = Field(
        default=None,
        description="Top ImageNet classes, most likely first: a hint of the subject, not a list of objects.",
    )
    quality: float | None = Field(
        default=None,
        description="BRISQUE no-reference quality score from 0 (clean) to 100 (very distorted: noise, blur, "
        "artefacts); natural photos score roughly 10 to 40.",
    )
    detectors: dict[str, str] = Field(
        default_factory=dict,
        description="Each detector's status: 'ok', 'absent' (not installed) or 'error: <message>'.",
    )
    detector_s: dict[str, float] = Field(default_factory=dict, description="Seconds each detector took.")


class InspectResult(BaseModel):
    """What ``inspect_image`` sees in an image."""

    handle: str = Field(description="Handle of the image looked at.")
    width: int = Field(description="Width of the image in pixels.")
    height: int = Field(description="Height of the image in pixels.")
    style: str = Field(description="The image's style, e.g. 'photo' or 'watercolor'.")
    background: str = Field(description="The background's colour name; 'unknown' where the back end cannot tell.")
    text: str | None = Field(description="Text rendered in the image, if any.")
    objects: list[SceneObject] = Field(description="Every object seen, with colour, box and identity.")
    counts: dict[str, int] = Field(description="Number of objects per kind.")
    answers: list[Answer] = Field(default_factory=list, description="Answers to the questions, in their order.")
    generator_s: float = Field(default=0.0, description="Seconds the back end spent looking at the image.")
    known: bool = Field(
        default=True,
        description="False when the backend cannot analyse this image (e.g. an uploaded photo): "
        "the objects list is then empty, not a claim that the image is empty.",
    )
    analysis: ImageAnalysis | None = Field(
        default=None,
        description="For an image without ground truth (known=false): what generic detectors found. "
        "Less exact than ground truth.",
    )
