"""Scoring a finished task: the synthetic verifier, the offline detectors, and the counts of faults caught."""

from __future__ import annotations

from visioncreator.evals.scoring.detectors import DetectScoring, check_item, score_with_detectors
from visioncreator.evals.scoring.verdict import (
    FaultCounts,
    Judge,
    Verdict,
    count_faults,
    score_answer,
    verdicts,
    verify_synthetic,
)

__all__ = [
    "DetectScoring",
    "FaultCounts",
    "Judge",
    "Verdict",
    "check_item",
    "count_faults",
    "score_answer",
    "score_with_detectors",
    "verdicts",
    "verify_synthetic",
]
