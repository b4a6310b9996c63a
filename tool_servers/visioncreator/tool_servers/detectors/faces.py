"""Faces and people with OpenCV 4.x alone: the Haar frontal-face cascade and the HOG people detector.

Both ship inside ``opencv-python`` (below 5: 5.x dropped the Haar cascades), need no weights
download and run in tens of milliseconds on a downscaled copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from visioncreator.tool_servers.detectors._common import Lazy, downscale, require, scale_box
from visioncreator.tool_servers.detectors.settings import DetectorSettings
from visioncreator.tool_servers.schemas import Region

__all__ = ["REQUIRES", "find_faces", "find_people"]

REQUIRES = ("cv2",)
"""Modules these detectors need."""


def _cascade() -> Any:
    cv2 = require("cv2")
    path = f"{cv2.data.haarcascades}haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load the Haar cascade {path}")
    return cascade


def _hog() -> Any:
    cv2 = require("cv2")
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


# OpenCV detector objects are not documented as thread-safe: each ``Lazy`` lock serialises its users.
_CASCADE: Lazy[Any] = Lazy(_cascade)
_HOG: Lazy[Any] = Lazy(_hog)


def find_faces(image: Image.Image, settings: DetectorSettings) -> list[Region]:
    """Frontal faces, largest first, boxed on the original image."""
    cv2 = require("cv2")
    small, factor = downscale(image, settings.faces_max_side)
    gray = cv2.equalizeHist(np.asarray(small.convert("L")))
    with _CASCADE.lock:
        found = _CASCADE.get().detectMultiScale(
            gray,
            scaleFactor=1.1,
            minNeighbors=settings.face_min_neighbors,
            minSize=(settings.face_min_size, settings.face_min_size),
        )
    boxes = sorted((tuple(int(v) for v in row) for row in found), key=lambda b: -b[2] * b[3])
    return [Region(box=scale_box(box, factor, image.size)) for box in boxes[: settings.max_regions]]


def find_people(image: Image.Image, settings: DetectorSettings) -> list[Region]:
    """Whole standing people, surest first, boxed on the original image."""
    cv2 = require("cv2")
    small, factor = downscale(image, settings.faces_max_side)
    pixels = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])
    if min(small.size) < 128:  # smaller than the HOG window: nothing to find
        return []
    with _HOG.lock:
        rects, weights = _HOG.get().detectMultiScale(pixels, winStride=(8, 8), padding=(8, 8), scale=1.05)
    scores = np.asarray(weights, dtype=np.float64).reshape(-1)
    kept = [(float(s), tuple(int(v) for v in r)) for r, s in zip(rects, scores, strict=True)]
    kept = [(s, r) for s, r in kept if s >= settings.people_min_score]
    if kept:
        # HOG reports one person at several scales; keep the surest of each overlapping group.
        keep = cv2.dnn.NMSBoxes([list(r) for _, r in kept], [s for s, _ in kept], settings.people_min_score, 0.4)
        kept = [kept[int(i)] for i in np.asarray(keep).reshape(-1)]
    kept.sort(key=lambda item: -item[0])
    return [Region(box=scale_box(r, factor, image.size), score=round(s, 3)) for s, r in kept[: settings.max_regions]]
