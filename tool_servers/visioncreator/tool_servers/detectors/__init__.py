"""Generic detectors for images without ground truth: colours, OCR, faces, people, labels, quality.

Each detector is optional: a missing package is reported as ``absent`` in
``ImageAnalysis.detectors``, never raised. Models ship inside PyPI packages and load once per
process on first use; nothing is downloaded.
"""

from __future__ import annotations

from visioncreator.tool_servers.detectors.answers import UNKNOWN, answer
from visioncreator.tool_servers.detectors.inspect import DETECTORS, analyse_image, inspect_real
from visioncreator.tool_servers.detectors.settings import DetectorSettings

__all__ = ["DETECTORS", "UNKNOWN", "DetectorSettings", "analyse_image", "answer", "inspect_real"]
