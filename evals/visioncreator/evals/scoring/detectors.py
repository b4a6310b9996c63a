"""Checklist scoring of real images (no ground truth) with the offline detectors behind ``inspect_image``.

What the detectors can check, and how:

- ``text``: OCR (PP-OCRv4) reads the image; the item passes when the wanted text appears in what
  was read, compared case-insensitively on letters and digits only.
- ``object`` / ``count`` / ``absent`` of people or faces: the face detector (Haar cascade) and the
  people detector (HOG); a person is counted by whichever saw more, a face by the face detector.
- ``object`` / ``absent`` of an ImageNet concept (``dog``, ``cat``, ``bird``, or any word of an
  ImageNet class name, e.g. ``umbrella``, ``laptop``): passes when a top label with at least
  ``min_label_probability`` names it. This is a whole-image classifier: it can confirm a
  subject that dominates the picture, and ``absent`` only means "not among the top labels".
- ``color``: passes when the wanted colour is one of the image's dominant colours. A whole-image
  measure, not the subject's colour: a proxy, and the detail says so.

Everything else (counts of other objects, positions, style, identity across images, edit
preservation), and any item whose detector is not installed, is reported as not checkable:
``checkable=False``, ``passed=False`` and the reason as the detail. Such an item is never passed,
and checklist scores leave it out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from visioncreator.tool_servers import DetectorSettings, ImageAnalysis, analyse_image
from visioncreator.tool_servers.synthetic import COLOR_SYNONYMS, CheckItem, CheckResult

__all__ = ["DetectScoring", "check_item", "score_with_detectors"]

_PEOPLE = frozenset({"person", "people", "man", "woman", "men", "women", "child", "children", "boy", "girl", "human"})
_FACES = frozenset({"face", "faces"})
# ImageNet-1k index ranges of concepts whose classes are named by breed or species, not by the concept.
_IMAGENET_GROUPS: dict[str, tuple[range, ...]] = {
    "dog": (range(151, 269),),
    "cat": (range(281, 286),),
    "bird": (range(7, 25), range(80, 101), range(127, 147)),
}


@dataclass(frozen=True, kw_only=True)
class DetectScoring:
    """How checklist items are checked with the detectors."""

    min_label_probability: float = 0.05
    """Smallest ImageNet label probability that counts as seeing a concept."""
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    """Settings of the detectors themselves."""


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def _skip(item: CheckItem, reason: str) -> CheckResult:
    return CheckResult(item=item, passed=False, checkable=False, detail=reason)


def _status(analysis: ImageAnalysis, detector: str) -> str:
    return analysis.detectors.get(detector, "absent")


def _check_text(item: CheckItem, analysis: ImageAnalysis) -> CheckResult:
    if analysis.text is None:
        return _skip(item, f"the OCR detector did not run ({_status(analysis, 'text')})")
    read = " / ".join(line.text for line in analysis.text)
    wanted = _norm(str(item.value or ""))
    if not wanted:
        return _skip(item, "the item names no text")
    ok = wanted in _norm(read)
    return CheckResult(item=item, passed=ok, detail=f"OCR read {read!r}" if read else "OCR read no text")


def _people(item: CheckItem, analysis: ImageAnalysis, faces_only: bool) -> CheckResult:
    if faces_only and analysis.faces is None:
        return _skip(item, f"the face detector did not run ({_status(analysis, 'faces')})")
    if analysis.faces is None and analysis.people is None:
        return _skip(item, f"the face and people detectors did not run ({_status(analysis, 'faces')})")
    n_faces = len(analysis.faces or [])
    seen = n_faces if faces_only else max(n_faces, len(analysis.people or []))
    what = "faces" if faces_only else "people (faces or whole bodies)"
    detail = f"{seen} {what} detected"
    if item.check == "object":
        return CheckResult(item=item, passed=seen >= 1, detail=detail)
    if item.check == "absent":
        return CheckResult(item=item, passed=seen == 0, detail=detail)
    if not isinstance(item.value, int):
        return _skip(item, f"count value {item.value!r} is not a number")
    return CheckResult(item=item, passed=seen == item.value, detail=detail)


def _label_seen(subject: str, analysis: ImageAnalysis, settings: DetectScoring) -> tuple[bool, str]:
    labels = [lb for lb in analysis.labels or [] if lb.probability >= settings.min_label_probability]
    groups = _IMAGENET_GROUPS.get(subject, ())
    word = re.compile(rf"\b{re.escape(subject)}s?\b", re.IGNORECASE)
    hit = next((lb for lb in labels if any(lb.index in g for g in groups) or word.search(lb.name)), None)
    top = ", ".join(f"{lb.name} ({lb.probability:.0%})" for lb in (analysis.labels or [])[:3]) or "none"
    return hit is not None, (f"ImageNet label {hit.name!r}" if hit else "no ImageNet label names it") + f"; top: {top}"


def _check_label(item: CheckItem, analysis: ImageAnalysis, settings: DetectScoring) -> CheckResult:
    if analysis.labels is None:
        return _skip(item, f"the ImageNet classifier did not run ({_status(analysis, 'labels')})")
    seen, detail = _label_seen(str(item.subject).lower(), analysis, settings)
    return CheckResult(item=item, passed=seen if item.check == "object" else not seen, detail=detail)


def _check_color(item: CheckItem, analysis: ImageAnalysis) -> CheckResult:
    if analysis.colors is None:
        return _skip(item, f"the colour statistics did not run ({_status(analysis, 'colors')})")
    wanted = str(item.value or "").lower()
    wanted = COLOR_SYNONYMS.get(wanted, wanted)
    names = [c.name for c in analysis.colors.dominant]
    detail = f"dominant colours of the whole image (a proxy for the {item.subject}'s): {', '.join(names) or 'none'}"
    return CheckResult(item=item, passed=wanted in names, detail=detail)


def check_item(item: CheckItem, analysis: ImageAnalysis, settings: DetectScoring | None = None) -> CheckResult:
    """Check one item against what the detectors found in its image."""
    settings = settings or DetectScoring()
    subject = (item.subject or "").lower()
    if item.check == "text":
        return _check_text(item, analysis)
    if item.check == "color":
        return _check_color(item, analysis) if item.value else _skip(item, "the item names no colour")
    if item.check in ("object", "count", "absent") and (subject in _PEOPLE or subject in _FACES):
        return _people(item, analysis, faces_only=subject in _FACES)
    if item.check in ("object", "absent") and subject:
        return _check_label(item, analysis, settings)
    reasons = {
        "count": f"the detectors do not count {subject or 'objects'} (only people and faces)",
        "position": "the detectors do not locate objects",
        "style": "no packaged detector recognises styles",
        "consistency": "no packaged detector compares identities across images",
        "preserved": "no packaged detector compares an edit with its input",
    }
    return _skip(item, reasons.get(item.check, f"{item.check} items are not supported"))


def score_with_detectors(
    checklist: Sequence[CheckItem],
    images: Sequence[Image.Image],
    settings: DetectScoring | None = None,
    *,
    analyses: Sequence[ImageAnalysis] | None = None,
) -> list[CheckResult]:
    """Check a task's checklist on its output images with the offline detectors.

    Blocking and CPU-bound (about a second per image once the models are loaded): call it from a
    worker thread in async code.

    Args:
        checklist: The items; ``item.image`` indexes ``images``.
        images: The task's output images, in order.
        settings: Thresholds and detector settings.
        analyses: What the detectors already found per image (skips running them again).

    Returns:
        One result per item, in order; ``checkable`` is false on items the detectors could not check.

    """
    settings = settings or DetectScoring()
    if analyses is None:
        needed = {item.image for item in checklist if item.image < len(images)}
        found = {i: analyse_image(images[i], settings.detectors) for i in sorted(needed)}
    else:
        found = dict(enumerate(analyses))
    results: list[CheckResult] = []
    for item in checklist:
        analysis = found.get(item.image)
        if analysis is None:
            detail = f"output image {item.image} is missing (the answer has {len(images)})"
            results.append(CheckResult(item=item, passed=False, detail=detail))
        else:
            results.append(check_item(item, analysis, settings))
    return results
