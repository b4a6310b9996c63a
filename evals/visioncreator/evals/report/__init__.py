"""Reports of eval runs: the summary per split, ``report.html`` with plots and images, and run comparison."""

from __future__ import annotations

from visioncreator.evals.report.compare import COMPARE_FILE, compare_runs
from visioncreator.evals.report.images import ImageRef, image_refs
from visioncreator.evals.report.summary import (
    CATEGORIES,
    SPLIT_ORDER,
    CostFigures,
    CostSummary,
    FaultSummary,
    JudgeSummary,
    ReflectionSummary,
    ReportError,
    SplitSummary,
    Summary,
    ordered_splits,
    read_errors,
    read_run,
    read_task_results,
    summarize,
    summarize_results,
)
from visioncreator.evals.report.write import PLOTS_DIR, REPORT_FILE, SUMMARY_FILE, write_report

__all__ = [
    "CATEGORIES",
    "COMPARE_FILE",
    "PLOTS_DIR",
    "REPORT_FILE",
    "SPLIT_ORDER",
    "SUMMARY_FILE",
    "CostFigures",
    "CostSummary",
    "FaultSummary",
    "ImageRef",
    "JudgeSummary",
    "ReflectionSummary",
    "ReportError",
    "SplitSummary",
    "Summary",
    "compare_runs",
    "image_refs",
    "ordered_splits",
    "read_errors",
    "read_run",
    "read_task_results",
    "summarize",
    "summarize_results",
    "write_report",
]
