"""Text in images: PP-OCRv4 through ``rapidocr-onnxruntime`` 1.4.x (the models ship in the wheel)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from visioncreator.tool_servers.detectors._common import Lazy, downscale, require
from visioncreator.tool_servers.detectors.settings import DetectorSettings
from visioncreator.tool_servers.schemas import TextLine

__all__ = ["REQUIRES", "read_text"]

REQUIRES = ("rapidocr_onnxruntime",)
"""Modules this detector needs."""


def _engine(threads: int) -> Any:
    module = require("rapidocr_onnxruntime")
    # "max" never upsizes (the default "min" does, and costs seconds); it also ignores
    # ``det_limit_side_len`` and detects at up to 2000 px, so ``read_text`` downscales first.
    return module.RapidOCR(det_limit_type="max", intra_op_num_threads=threads, inter_op_num_threads=threads)


_ENGINES: dict[int, Lazy[Any]] = {}


def read_text(image: Image.Image, settings: DetectorSettings) -> list[TextLine]:
    """Lines of text with their boxes (on the original image) and confidences, top to bottom."""
    threads = settings.ocr_threads
    engine = _ENGINES.setdefault(threads, Lazy(lambda: _engine(threads)))
    small, factor = downscale(image, settings.ocr_max_side)
    pixels = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])  # rapidocr wants OpenCV's BGR order
    with engine.lock:
        found, _ = engine.get()(pixels)
    lines: list[TextLine] = []
    for points, text, confidence in found or []:
        if float(confidence) < settings.ocr_min_confidence or not str(text).strip():
            continue
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
        box = (
            max(round(min(xs) * factor), 0),
            max(round(min(ys) * factor), 0),
            min(round(max(xs) * factor), image.width),
            min(round(max(ys) * factor), image.height),
        )
        lines.append(TextLine(text=str(text).strip(), confidence=round(float(confidence), 4), box=box))
    lines.sort(key=lambda line: (line.box[1], line.box[0]))
    return lines[: settings.ocr_max_lines]
