"""Answers to simple ``inspect_image`` questions from what the detectors found."""

from __future__ import annotations

import re

from visioncreator.tool_servers.schemas import ImageAnalysis

__all__ = ["UNKNOWN", "answer"]

UNKNOWN = "unknown"
"""The answer to a question the analysis cannot answer."""

_HOW_MANY = re.compile(r"\bhow many\b")
_FACES = re.compile(r"\bfaces?\b")
_PEOPLE = re.compile(r"\b(people|persons?|humans?|men|women|man|woman|child|children|kids?|boys?|girls?)\b")
_TEXT = re.compile(r"\b(text|written|writing|caption|says?|words?|read|letters|sign|title)\b")
_COLOR = re.compile(r"\bcolou?rs?\b")
_QUALITY = re.compile(r"\b(quality|blurry|blurred|blur|noisy|noise|sharp|artefacts?|artifacts?)\b")
_EXISTS = re.compile(r"^(is|are|does|do) |\b(is|are) there\b|\bany\b")
_CONTENT = re.compile(
    r"\bwhat(?:'s| is| does)?\b.*\b(in|shown|show|shows|depicted|depict|depicts|this|it|subject)\b"
    r"|\bdescribe\b|\bsubject\b|\bwhat kind\b"
)


def _count_people(analysis: ImageAnalysis) -> int | None:
    """People seen: a face is a person too, so whichever detector saw more."""
    if analysis.faces is None and analysis.people is None:
        return None
    return max(len(analysis.faces or []), len(analysis.people or []))


def _count(question: str, analysis: ImageAnalysis) -> int | None:
    if _FACES.search(question):
        return None if analysis.faces is None else len(analysis.faces)
    if _PEOPLE.search(question):
        return _count_people(analysis)
    return None


def answer(question: str, analysis: ImageAnalysis) -> str:
    """A short answer from the analysis, or ``UNKNOWN`` when it has nothing to say.

    Counts answer with a number, text with the lines read (or ``none``), colour with the
    dominant colour names, content with the top ImageNet labels.
    """
    q = question.lower().strip()
    if _HOW_MANY.search(q):
        count = _count(q, analysis)
        return UNKNOWN if count is None else str(count)
    if _TEXT.search(q):
        if analysis.text is None:
            return UNKNOWN
        return " / ".join(line.text for line in analysis.text) or "none"
    if _COLOR.search(q):
        if analysis.colors is None or not analysis.colors.dominant:
            return UNKNOWN
        return ", ".join(share.name for share in analysis.colors.dominant[:3])
    if _EXISTS.search(q) and (_FACES.search(q) or _PEOPLE.search(q)):
        count = _count(q, analysis)
        return UNKNOWN if count is None else ("yes" if count else "no")
    if _QUALITY.search(q):
        if analysis.quality is None:
            return UNKNOWN
        return f"BRISQUE {analysis.quality:.1f} (0 clean, 100 very distorted)"
    if _CONTENT.search(q):
        if not analysis.labels:
            return UNKNOWN
        return ", ".join(f"{label.name} ({label.probability:.0%})" for label in analysis.labels[:3])
    return UNKNOWN
