"""Generic detectors for images without ground truth: colours, OCR, faces, people, labels, quality.

Each detector is optional: a missing package is reported as ``absent`` in
``ImageAnalysis.detectors``, never raised. Models ship inside PyPI packages and load once per
process on first use; nothing is downloaded.

Importing this package is cheap: the detectors (numpy and the detector packages) load on the
first call of :func:`analyse_image` or :func:`inspect_real`, or on first access to
``DETECTORS``, so a tool server that never sees an image without ground truth never loads them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from visioncreator.tool_servers.detectors.answers import UNKNOWN, answer
from visioncreator.tool_servers.detectors.settings import DetectorSettings

if TYPE_CHECKING:
    from PIL import Image

    from visioncreator.tool_servers.backend import SourceImage
    from visioncreator.tool_servers.detectors.inspect import DETECTORS
    from visioncreator.tool_servers.schemas import ImageAnalysis, InspectImageInput, InspectResult

__all__ = ["DETECTORS", "UNKNOWN", "DetectorSettings", "analyse_image", "answer", "inspect_real"]


def _inspect() -> Any:
    return importlib.import_module("visioncreator.tool_servers.detectors.inspect")


def analyse_image(image: Image.Image, settings: DetectorSettings | None = None) -> ImageAnalysis:
    """Run every detector on ``image``; one that is missing or fails is reported, never raised.

    Blocking and CPU-bound (about a second on two cores once the models are loaded, a few
    seconds the first time): call it from a worker thread in async code.
    """
    result: ImageAnalysis = _inspect().analyse_image(image, settings)
    return result


def inspect_real(
    args: InspectImageInput, image: SourceImage, settings: DetectorSettings | None = None
) -> InspectResult:
    """Describe an image that has no ground truth (an uploaded photo) with generic detectors.

    The result has ``known=False`` and no objects: the detectors do not locate COCO objects.
    What they do see is in ``analysis``, and ``answers`` uses it where it can.
    """
    result: InspectResult = _inspect().inspect_real(args, image, settings)
    return result


def __getattr__(name: str) -> Any:
    if name == "DETECTORS":
        return _inspect().DETECTORS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
