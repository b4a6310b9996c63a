"""What goes to the judge and what comes back: one question with its images, one parsed answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["JudgeAnswer", "JudgeRequest"]

T = TypeVar("T", bound=BaseModel)


class JudgeRequest(BaseModel):
    """One question to the judge: a system prompt, a user prompt and the images it is about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Name of the answer schema (``json_schema.name``)."""
    prompt: str
    system: str = ""
    images: tuple[bytes, ...] = ()
    """Image files (PNG, JPEG or WEBP), sent as data URIs after the prompt."""


@dataclass(frozen=True)
class JudgeAnswer(Generic[T]):
    """A parsed answer, and whether it came from the cache."""

    value: T
    cached: bool
    model: str
    raw: str
    requests: int
    """HTTP requests this answer took (0 when cached)."""
