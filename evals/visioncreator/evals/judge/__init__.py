"""Judges: an LLM judge client (structured output, retries, a SQLite cache) and the vision judge built on it."""

from __future__ import annotations

from visioncreator.evals.judge.cache import JudgeCache
from visioncreator.evals.judge.client import (
    JudgeClient,
    JudgeConnectionError,
    JudgeError,
    JudgeHTTPError,
    JudgeParseError,
    JudgeSettings,
    reason_pattern,
    yes_no_model,
)
from visioncreator.evals.judge.questions import checklist_question
from visioncreator.evals.judge.request import JudgeAnswer, JudgeRequest
from visioncreator.evals.judge.vision import ImageDescriber, JudgeMode, VisionJudge, describe_image

__all__ = [
    "ImageDescriber",
    "JudgeAnswer",
    "JudgeCache",
    "JudgeClient",
    "JudgeConnectionError",
    "JudgeError",
    "JudgeHTTPError",
    "JudgeMode",
    "JudgeParseError",
    "JudgeRequest",
    "JudgeSettings",
    "VisionJudge",
    "checklist_question",
    "describe_image",
    "reason_pattern",
    "yes_no_model",
]
