"""What a suite is made of: tasks with their input images and checklists, and what loading a file gave."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from visioncreator.evals.errors import EvalsError
from visioncreator.evals.results import TaskError
from visioncreator.policy import Split
from visioncreator.tool_servers.synthetic import CheckItem

__all__ = ["InputImage", "SuiteError", "SuiteLoad", "SuiteTask"]


class SuiteError(EvalsError, ValueError):
    """A suite file, or an input image it names, that cannot be used (the message names the line or file)."""

    def __init__(self, message: str, errors: Sequence[TaskError] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class InputImage(BaseModel):
    """An input image of a task: exactly one of ``prompt`` and ``path``.

    A ``prompt`` image is rendered by the synthetic environment (faults off); a ``path`` image is
    a user's file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = None
    """What the synthetic environment renders (its scene is the image's ground truth)."""
    path: str | None = None
    """An image file (PNG, JPEG or WEBP), relative to the suite file's folder; it has no ground truth."""
    seed: int = 0
    width: int = 512
    height: int = 512

    @model_validator(mode="after")
    def _one_source(self) -> InputImage:
        if (self.prompt is None) == (self.path is None):
            raise ValueError("an input image needs exactly one of 'prompt' and 'path'")
        if self.path is not None and (not self.path.strip() or Path(self.path).is_absolute()):
            raise ValueError(f"input image path {self.path!r} must be a non-empty path relative to the suite file")
        return self


class SuiteTask(BaseModel):
    """One task of a suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    split: Split
    request: str = Field(min_length=1)
    n_images: int = Field(ge=1, le=16)
    inputs: tuple[InputImage, ...] = ()
    checklist: tuple[CheckItem, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)
    """Free-form labels carried into reports (e.g. GenEval's ``tag``, GEdit-Bench's ``task_type``)."""

    @model_validator(mode="after")
    def _indices(self) -> SuiteTask:
        for k, item in enumerate(self.checklist):
            if item.image >= self.n_images:
                raise ValueError(f"checklist[{k}] is about output image {item.image}, but n_images is {self.n_images}")
            if item.check == "consistency" and (item.reference is None or item.reference >= self.n_images):
                raise ValueError(f"checklist[{k}] (consistency) needs a reference output image below {self.n_images}")
            if item.check == "preserved" and (item.reference is None or item.reference >= len(self.inputs)):
                raise ValueError(f"checklist[{k}] (preserved) needs a reference input image below {len(self.inputs)}")
        return self


class SuiteLoad(BaseModel):
    """What :func:`load_suite_checked` read: the tasks that loaded and an error per line that did not."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[SuiteTask] = Field(default_factory=list)
    errors: list[TaskError] = Field(default_factory=list)
