"""``inspect_real``: look at an image without ground truth with every detector that is installed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from PIL import Image

from visioncreator.tool_servers.backend import SourceImage
from visioncreator.tool_servers.detectors import colors, faces, labels, ocr, quality
from visioncreator.tool_servers.detectors._common import Absent, installed
from visioncreator.tool_servers.detectors.answers import answer
from visioncreator.tool_servers.detectors.settings import DetectorSettings
from visioncreator.tool_servers.schemas import Answer, ImageAnalysis, InspectImageInput, InspectResult

__all__ = ["DETECTORS", "analyse_image", "inspect_real"]

_log = logging.getLogger(__name__)

_Run = Callable[[Image.Image, DetectorSettings], Any]

_REGISTRY: Final[dict[str, tuple[tuple[str, ...], _Run]]] = {
    "colors": ((), colors.color_stats),
    "text": (ocr.REQUIRES, ocr.read_text),
    "faces": (faces.REQUIRES, faces.find_faces),
    "people": (faces.REQUIRES, faces.find_people),
    "labels": (labels.REQUIRES, labels.classify),
    "quality": (quality.REQUIRES, quality.brisque_score),
}

DETECTORS: Final[tuple[str, ...]] = tuple(_REGISTRY)
"""Detector names, as keys of ``ImageAnalysis.detectors``."""

_MAX_ERROR_CHARS = 160
_BACKGROUND = "unknown"  # a photo's background is not something these detectors name


def _error(exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "error: " + message[:_MAX_ERROR_CHARS]


def analyse_image(image: Image.Image, settings: DetectorSettings | None = None) -> ImageAnalysis:
    """Run every detector on ``image``; one that is missing or fails is reported, never raised.

    Blocking and CPU-bound (about a second on two cores once the models are loaded, a few
    seconds the first time): call it from a worker thread in async code.
    """
    settings = settings or DetectorSettings()
    found: dict[str, Any] = {}
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, (requires, run) in _REGISTRY.items():
        if not installed(*requires):
            status[name] = "absent"
            continue
        start = time.perf_counter()
        try:
            found[name] = run(image, settings)
        except Absent:
            status[name] = "absent"
        except Exception as exc:  # one broken detector must not hide what the others saw
            _log.info("detector %s failed", name, exc_info=True)
            status[name] = _error(exc)
        else:
            status[name] = "ok"
        seconds[name] = round(time.perf_counter() - start, 4)
    return ImageAnalysis(
        colors=found.get("colors"),
        text=found.get("text"),
        faces=found.get("faces"),
        people=found.get("people"),
        labels=found.get("labels"),
        quality=found.get("quality"),
        detectors=status,
        detector_s=seconds,
    )


def inspect_real(
    args: InspectImageInput, image: SourceImage, settings: DetectorSettings | None = None
) -> InspectResult:
    """Describe an image that has no ground truth (an uploaded photo) with generic detectors.

    The result has ``known=False`` and no objects: the detectors do not locate COCO objects.
    What they do see is in ``analysis``, and ``answers`` uses it where it can.
    """
    start = time.perf_counter()
    analysis = analyse_image(image.image, settings)
    lines = [line.text for line in analysis.text or []]
    return InspectResult(
        handle=image.handle,
        width=image.image.width,
        height=image.image.height,
        style="photo",
        background=_BACKGROUND,
        text="\n".join(lines) or None,
        objects=[],
        counts={},
        answers=[Answer(question=q, answer=answer(q, analysis)) for q in args.questions],
        generator_s=round(time.perf_counter() - start, 4),
        known=False,
        analysis=analysis,
    )
