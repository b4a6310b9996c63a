"""Checklist items: verifiable constraints on a task's output images."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.tool_servers.scene import Relation

CheckKind = Literal[
    "object",  # at least one `subject` is present
    "count",  # exactly `value` (int) objects of kind `subject`
    "color",  # every `subject` has colour `value`
    "position",  # some `subject` is `relation` some `other`
    "text",  # the rendered text equals `value`
    "style",  # the image style is `value`
    "absent",  # no `subject` is present
    "consistency",  # `subject` in `image` has the same identity as in output `reference`
    "preserved",  # objects of input image `reference` not named by the edit are kept
]


class CheckItem(BaseModel):
    """One verifiable constraint on one output image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: CheckKind
    image: int = Field(default=0, ge=0, description="Index of the output image the item is about.")
    subject: str | None = None
    value: str | int | None = None
    relation: Relation | None = None
    other: str | None = None
    reference: int | None = Field(
        default=None,
        description="For 'consistency': index of another output image. For 'preserved': index of an input image.",
    )


class CheckResult(BaseModel):
    """The verdict on one checklist item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: CheckItem
    passed: bool
    detail: str = ""
    checkable: bool = Field(
        default=True,
        description=(
            "False when the scorer could not check the item at all (e.g. no detector for it): the item then "
            "never passes, and checklist scores leave it out."
        ),
    )
