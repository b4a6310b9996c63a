"""The numbers of an eval run: :func:`summarize` reads a run folder into a :class:`Summary` per split.

A run folder is described in ``visioncreator.evals.results``; :func:`~visioncreator.evals.report.write.write_report`
turns the summary into ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visioncreator.evals.errors import EvalsError
from visioncreator.evals.results import (
    ERRORS_FILE,
    RUN_FILE,
    ReflectionCategory,
    RunInfo,
    TaskError,
    TaskResult,
    read_results,
)
from visioncreator.graph import JsonlError, read_jsonl

__all__ = [
    "CATEGORIES",
    "SPLIT_ORDER",
    "CostFigures",
    "CostSummary",
    "FaultSummary",
    "JudgeSummary",
    "ReflectionSummary",
    "ReportError",
    "SplitSummary",
    "Summary",
    "existing_run_dir",
    "ordered_splits",
    "read_errors",
    "read_run",
    "read_task_results",
    "summarize",
    "summarize_results",
]

SPLIT_ORDER = ("single", "multi", "img2img")
"""Splits in the order every table lists them; other split names follow alphabetically."""
CATEGORIES: tuple[ReflectionCategory, ...] = ("good", "under", "over", "unknown")


class ReportError(EvalsError, ValueError):
    """A run folder that cannot be reported: missing, or holding a record that does not parse."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CostFigures(_Model):
    """Cost figures of a set of tasks (a mean per task, or a total)."""

    policy_calls: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    tokens: float = 0.0
    """Prompt plus completion tokens."""
    tool_calls: float = 0.0
    generator_s: float = 0.0
    policy_s: float = 0.0
    wall_s: float = 0.0


class CostSummary(_Model):
    """What a set of tasks cost: per task on average, and in all."""

    mean: CostFigures = Field(default_factory=CostFigures)
    total: CostFigures = Field(default_factory=CostFigures)


class ReflectionSummary(_Model):
    """The reflection distribution (the paper's Figure 1 categories) over every reflection of a set of tasks."""

    total: int = 0
    counts: dict[ReflectionCategory, int] = Field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    fractions: dict[ReflectionCategory, float] = Field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0.0))
    """Count over ``total`` (all 0 when there is no reflection)."""
    unreflected: int = 0
    """Images the policy made that no reflection judged (not counted in ``total``)."""
    unreflected_faulty: int = 0
    """Of those, images with an injected fault."""


class JudgeSummary(_Model):
    """Mean judge scores (0-10) over the judged images; ``None`` where no judgement gave that score."""

    images: int = 0
    """Judgements recorded (errors included)."""
    errors: int = 0
    semantic_consistency: float | None = None
    perceptual_quality: float | None = None
    overall: float | None = None
    checklist_yes: float | None = None
    """Fraction of the judge's checklist answers that were yes."""


class FaultSummary(_Model):
    """Injected faults and how many a reflection caught."""

    injected: int = 0
    caught: int = 0
    catch_rate: float | None = None
    """``caught / injected``; ``None`` when nothing was injected."""
    faulty_answers: int = 0
    """Answer images that carry an injected fault."""


class SplitSummary(_Model):
    """The numbers of one split (or of the whole run)."""

    split: str
    tasks: int = 0
    successes: int = 0
    success_rate: float = 0.0
    checklist_mean: float = 0.0
    judge: JudgeSummary | None = None
    """``None`` when no task of the split was judged."""
    cost: CostSummary = Field(default_factory=CostSummary)
    reflections: ReflectionSummary = Field(default_factory=ReflectionSummary)
    faults: FaultSummary = Field(default_factory=FaultSummary)
    terminations: dict[str, int] = Field(default_factory=dict)
    scorers: dict[str, int] = Field(default_factory=dict)


class Summary(_Model):
    """Everything ``summary.json`` holds."""

    run: RunInfo | None = None
    """``run.json``, when the run folder has one."""
    created_at: str = ""
    splits: dict[str, SplitSummary] = Field(default_factory=dict)
    """Split name -> its numbers, in ``SPLIT_ORDER``."""
    overall: SplitSummary = Field(default_factory=lambda: SplitSummary(split="all"))
    errors: int = 0
    """Records in ``errors.jsonl``: suite lines that did not load, tasks that crashed or met a tool
    server outage (``infrastructure``: never scored) and have no result since a re-run."""
    errors_by_stage: dict[str, int] = Field(default_factory=dict)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _split_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split), "") if split in SPLIT_ORDER else (len(SPLIT_ORDER), split)


def ordered_splits(splits: Iterable[str]) -> list[str]:
    """Split names in table order: ``SPLIT_ORDER`` first, then the others alphabetically."""
    return sorted(set(splits), key=_split_key)


def _cost(results: Sequence[TaskResult]) -> CostSummary:
    total = CostFigures(
        policy_calls=sum(r.cost.policy_calls for r in results),
        prompt_tokens=sum(r.cost.prompt_tokens for r in results),
        completion_tokens=sum(r.cost.completion_tokens for r in results),
        tokens=sum(r.cost.prompt_tokens + r.cost.completion_tokens for r in results),
        tool_calls=sum(r.cost.tool_calls for r in results),
        generator_s=sum(r.cost.generator_s for r in results),
        policy_s=sum(r.cost.policy_s for r in results),
        wall_s=sum(r.cost.wall_s for r in results),
    )
    n = max(len(results), 1)
    mean = CostFigures(**{name: value / n for name, value in total.model_dump().items()})
    return CostSummary(mean=mean, total=total)


def _reflections(results: Sequence[TaskResult]) -> ReflectionSummary:
    counts = Counter(r.category for result in results for r in result.reflections)
    total = sum(counts.values())
    return ReflectionSummary(
        total=total,
        counts={c: counts.get(c, 0) for c in CATEGORIES},
        fractions={c: counts.get(c, 0) / total if total else 0.0 for c in CATEGORIES},
        unreflected=sum(r.unreflected for r in results),
        unreflected_faulty=sum(r.unreflected_faulty for r in results),
    )


def _judge(results: Sequence[TaskResult]) -> JudgeSummary | None:
    scores = [j for r in results for j in r.judge]
    if not scores:
        return None
    answers = [yes for j in scores for yes in j.checklist.values()]
    return JudgeSummary(
        images=len(scores),
        errors=sum(j.error is not None for j in scores),
        semantic_consistency=_mean([j.semantic_consistency for j in scores if j.semantic_consistency is not None]),
        perceptual_quality=_mean([j.perceptual_quality for j in scores if j.perceptual_quality is not None]),
        overall=_mean([j.overall for j in scores if j.overall is not None]),
        checklist_yes=_mean([float(a) for a in answers]),
    )


def _split_summary(split: str, results: Sequence[TaskResult]) -> SplitSummary:
    successes = sum(r.success for r in results)
    injected = sum(r.faults_injected for r in results)
    caught = sum(r.faults_caught for r in results)
    return SplitSummary(
        split=split,
        tasks=len(results),
        successes=successes,
        success_rate=successes / len(results) if results else 0.0,
        checklist_mean=_mean([r.checklist_score for r in results]) or 0.0,
        judge=_judge(results),
        cost=_cost(results),
        reflections=_reflections(results),
        faults=FaultSummary(
            injected=injected,
            caught=caught,
            catch_rate=caught / injected if injected else None,
            faulty_answers=sum(r.faulty_answers for r in results),
        ),
        terminations=dict(sorted(Counter(r.termination or "unknown" for r in results).items())),
        scorers=dict(sorted(Counter(r.scorer for r in results).items())),
    )


def summarize_results(
    results: Sequence[TaskResult], *, errors: Sequence[TaskError] = (), run: RunInfo | None = None
) -> Summary:
    """The summary of a set of task results (no files touched).

    An error of a task that has a result (a re-run after a crash or an outage finished it) is not
    counted: only load errors and tasks still without a result are.
    """
    scored = {r.id for r in results}
    errors = [e for e in errors if e.stage == "load" or e.id is None or e.id not in scored]
    by_split: dict[str, list[TaskResult]] = {}
    for result in results:
        by_split.setdefault(result.split, []).append(result)
    return Summary(
        run=run,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        splits={s: _split_summary(s, by_split[s]) for s in ordered_splits(by_split)},
        overall=_split_summary("all", results),
        errors=len(errors),
        errors_by_stage=dict(sorted(Counter(e.stage for e in errors).items())),
    )


def existing_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a path, checked to be a folder.

    Raises:
        ReportError: It does not exist or is not a folder.

    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"run folder {str(path)!r} does not exist or is not a folder")
    return path


def read_run(run_dir: str | Path) -> RunInfo | None:
    """The run's ``run.json``, or ``None`` when it has none.

    Raises:
        ReportError: ``run.json`` does not parse.

    """
    path = existing_run_dir(run_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        return RunInfo.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ReportError(f"{path}: not a RunInfo record: {exc}") from exc


def read_errors(run_dir: str | Path) -> list[TaskError]:
    """Every record of the run's ``errors.jsonl`` (none when the file is missing).

    Raises:
        ReportError: A line does not parse; the message names it.

    """
    try:
        return read_jsonl(existing_run_dir(run_dir) / ERRORS_FILE, TaskError)
    except JsonlError as exc:
        raise ReportError(str(exc)) from exc


def read_task_results(run_dir: str | Path) -> list[TaskResult]:
    """The run's task results (the last record of a repeated id wins), in the order they first finished.

    Raises:
        ReportError: ``results.jsonl`` holds a line that does not parse.

    """
    try:
        return read_results(existing_run_dir(run_dir))
    except JsonlError as exc:
        raise ReportError(str(exc)) from exc


def summarize(run_dir: str | Path) -> Summary:
    """The summary of a run folder (nothing written).

    Raises:
        ReportError: The folder is missing or one of its records does not parse.

    """
    return summarize_results(read_task_results(run_dir), errors=read_errors(run_dir), run=read_run(run_dir))
