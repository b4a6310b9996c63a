"""Limits of the generic image detectors: each one's cost is bounded by these."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DetectorSettings"]


@dataclass(frozen=True, kw_only=True, slots=True)
class DetectorSettings:
    """Settings of ``inspect_real``; every size limit bounds one detector's time."""

    color_max_side: int = 128
    """Longest side, in pixels, of the copy the colour statistics are computed on."""

    color_min_fraction: float = 0.05
    """Smallest share of the pixels for a colour to be listed as dominant."""

    color_max_count: int = 5
    """Most dominant colours listed."""

    ocr_max_side: int = 960
    """Longest side of the copy OCR reads; its detector's time grows with the pixel count."""

    ocr_threads: int = 1
    """onnxruntime threads for OCR; one keeps its spinning worker threads from starving the other detectors."""

    ocr_min_confidence: float = 0.6
    """Text lines read with a lower confidence are dropped."""

    ocr_max_lines: int = 32
    """Most text lines reported."""

    faces_max_side: int = 640
    """Longest side of the copy faces and people are searched on; boxes are scaled back."""

    face_min_size: int = 24
    """Smallest face searched for, in pixels of the downscaled copy."""

    face_min_neighbors: int = 5
    """Haar cascade ``minNeighbors``: higher means fewer, surer faces."""

    people_min_score: float = 1.0
    """Smallest HOG people-detector score kept; the default (0) gives many false positives."""

    max_regions: int = 32
    """Most faces and most people reported."""

    labels_top_k: int = 5
    """How many ImageNet classes are reported."""

    labels_threads: int | None = 1
    """torch threads while classifying (set, then restored: torch's setting is process-wide).

    One thread took 0.06-0.09 s on a busy two-core machine where two took 0.3-2 s; None
    leaves torch's setting alone.
    """

    quality_max_side: int = 512
    """Longest side of the copy BRISQUE scores; its filters cost grows with the pixel count."""

    def __post_init__(self) -> None:
        for name in ("color_max_side", "ocr_max_side", "faces_max_side", "quality_max_side"):
            if getattr(self, name) < 32:
                raise ValueError(f"{name} must be at least 32")
        if not 0.0 <= self.color_min_fraction <= 1.0:
            raise ValueError("color_min_fraction must be within [0, 1]")
        if not 0.0 <= self.ocr_min_confidence <= 1.0:
            raise ValueError("ocr_min_confidence must be within [0, 1]")
        if self.labels_threads is not None and self.labels_threads < 1:
            raise ValueError("labels_threads must be at least 1 or None")
        if self.ocr_threads < 1:
            raise ValueError("ocr_threads must be at least 1")
        if not 1 <= self.labels_top_k <= 1000:
            raise ValueError("labels_top_k must be within [1, 1000]")
