"""Scene models: what a prompt asks for, what an image holds, and what went wrong.

These are the ground-truth records of the ``synthetic`` backend and the observation
format of ``inspect_image``. They are plain pydantic models so that they travel as JSON
through MCP, trajectories and checkpoints.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Relation = Literal["left_of", "right_of", "above", "below", "next_to"]
FaultType = Literal[
    "dropped_object",
    "wrong_color",
    "wrong_count",
    "swapped_position",
    "misspelled_text",
    "identity_drift",
]
Box = tuple[int, int, int, int]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectSpec(_Model):
    """One requested group of objects: ``three red apples``."""

    kind: str = Field(description="COCO class name, singular, e.g. 'dog', 'traffic light'.")
    count: int = Field(default=1, ge=1, le=10, description="How many of them.")
    color: str | None = Field(default=None, description="Colour name, or None when unspecified.")


class RelationSpec(_Model):
    """A requested spatial relation between two object kinds."""

    subject: str
    relation: Relation
    object: str


class SceneSpec(_Model):
    """What a prompt asks for, parsed."""

    objects: tuple[ObjectSpec, ...] = ()
    relations: tuple[RelationSpec, ...] = ()
    text: str | None = Field(default=None, description="Quoted text to render, if any.")
    style: str | None = Field(default=None, description="Style name, if the prompt names one.")


class SceneObject(_Model):
    """One object as drawn in an image."""

    id: int = Field(description="Index of the object within its image.")
    kind: str = Field(description="COCO class name, singular, e.g. 'dog'.")
    color: str = Field(description="Colour name, e.g. 'red'.")
    box: Box = Field(description="Bounding box in pixels: x0, y0, x1, y1.")
    identity: str = Field(
        description="Appearance signature (kind, colour, pattern). Equal signatures across images "
        "mean the same individual; a different one is identity drift."
    )


class Scene(_Model):
    """What an image holds: the ground truth of a synthetic image, or an observation of any image."""

    width: int
    height: int
    style: str = "photo"
    background: str = "white"
    objects: tuple[SceneObject, ...] = ()
    text: str | None = None


class Fault(_Model):
    """A fault injected on purpose into a synthetic image."""

    type: FaultType
    subject: str | None = Field(default=None, description="Object kind the fault concerns, if any.")
    detail: str = Field(description="What changed, in words: 'dog: red -> blue'.")


class GroundTruth(_Model):
    """Everything the synthetic environment knows about one image it made."""

    scene: Scene
    requested: SceneSpec | None = Field(
        default=None, description="What the prompt or the edit asked for, as the backend understood it."
    )
    faults: tuple[Fault, ...] = ()
    tool: str
    prompt: str = ""
    seed: int = 0
    sources: tuple[str, ...] = Field(default=(), description="Handles of input or reference images.")


class EditOp(_Model):
    """One operation of an edit instruction: ``make the car blue`` is ``recolor car blue``."""

    op: Literal["add", "remove", "recolor", "move", "restyle", "text"]
    kind: str | None = None
    count: int | None = Field(default=None, ge=1, le=10)
    color: str | None = None
    relation: Relation | None = None
    other: str | None = None
    style: str | None = None
    text: str | None = None
