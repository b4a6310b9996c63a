"""Run a :class:`~visioncreator.rl.train.config.TrainConfig`'s stages in sequence, resumably, with held-out evaluation.

Layout of ``OUTPUT_DIR``:

- ``NN-NAME/`` per stage (``01-grpo-reflect``, ``02-sft``, ...): the trainer's checkpoints, the
  final ``model/``, and ``stage.json`` (a :class:`StageRecord`) once the stage has finished;
- ``NN-NAME/eval.json``: the held-out evaluation after that stage
  (:func:`~visioncreator.rl.train.evaluation.evaluate`); ``eval-initial.json``: before the first stage;
- ``curves.json``: a :class:`Curves` (reward and loss per step of every stage, success per stage).

A GRPO stage without ``max_completion_length`` gets one derived from the expert's trajectories on
its tasks, measured with the start model's tokenizer
(:func:`~visioncreator.rl.train.lengths.with_completion_limit`); it is logged and kept in the
stage's metrics (``max_completion_length``).

Each stage starts from the previous finished stage's model (the first from ``policy.model``). On a
re-run, a stage with a ``stage.json`` is skipped and an interrupted one continues from its latest
TRL checkpoint; with ``resume=False`` markers and checkpoints are ignored and every stage trains
again from its start model.

Heavy imports (torch, TRL) happen inside the trainers; importing this module stays light.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.rl.train.config import GRPOStage, SFTStage, TrainConfig
from visioncreator.rl.train.evaluation import EvalPoint, Event, evaluate
from visioncreator.rl.train.harness import StageResult

__all__ = [
    "Curves",
    "RunSummary",
    "StageCurve",
    "StageRecord",
    "curve_steps",
    "run_stages",
    "stage_dir",
]

_LOG = logging.getLogger(__name__)
MARKER = "stage.json"
CURVES = "curves.json"
_CURVE_KEYS = ("loss", "reward", "learning_rate", "grad_norm", "groups/degenerate")


class StageRecord(BaseModel):
    """What ``stage.json`` holds: a finished stage."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="1-based position in the config's stages.")
    name: str
    kind: Literal["sft", "grpo"]
    model_dir: str = Field(description="The stage's final model directory.")
    start_model: str = Field(description="The model directory the stage started from.")
    metrics: dict[str, float] = Field(default_factory=dict)
    log_history: list[dict[str, Any]] = Field(default_factory=list)
    wall_s: float = 0.0


class StageCurve(BaseModel):
    """One stage's logged values per step."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["sft", "grpo"]
    steps: list[dict[str, float]] = Field(default_factory=list, description="{'step': n, 'loss': ..., ...}.")


class Curves(BaseModel):
    """``curves.json``: what the run learned, stage by stage."""

    model_config = ConfigDict(extra="forbid")

    stages: list[StageCurve] = Field(default_factory=list)
    evals: list[EvalPoint] = Field(default_factory=list, description="Before the first stage, then after each.")


class RunSummary(BaseModel):
    """The outcome of :func:`run_stages`."""

    model_config = ConfigDict(extra="forbid")

    output_dir: str
    stages: list[StageRecord]
    skipped: list[str] = Field(default_factory=list, description="Stage directories already finished.")
    final_model: str | None = None
    curves: Curves


def stage_dir(output_dir: str | Path, index: int, stage: SFTStage | GRPOStage) -> Path:
    """``OUTPUT_DIR/NN-NAME`` of the ``index``-th (1-based) stage; the name is made path-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stage.name).strip("-.") or stage.kind
    return Path(output_dir) / f"{index:02d}-{safe}"


def curve_steps(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """The per-step rows of a TRL log history: ``step`` plus whichever of loss, reward, ... were logged."""
    rows = []
    for entry in log_history:
        values = {k: float(entry[k]) for k in _CURVE_KEYS if isinstance(entry.get(k), int | float)}
        if values and "step" in entry and "train_runtime" not in entry:
            rows.append({"step": float(entry["step"]), **values})
    return rows


def _emit(progress: Event | None, event: str, **data: Any) -> None:
    if progress is not None:
        progress({"event": event, **data})


def _eval(
    config: TrainConfig, model_dir: Path, path: Path, after: str, resume: bool, progress: Event | None
) -> EvalPoint | None:
    if config.eval_tasks is None:
        return None
    if resume and path.is_file():
        return EvalPoint.model_validate_json(path.read_text())
    point = evaluate(
        model_dir,
        config.eval_tasks,
        policy=config.policy,
        store=Path(config.output_dir) / "eval-store",
        after=after,
        seed=config.seed,
        group_size=config.eval_group_size,
        temperature=config.eval_temperature,
        max_turns=config.eval_max_turns,
        progress=progress,
    )
    path.write_text(point.model_dump_json(indent=2))
    _emit(progress, "eval", **point.model_dump(exclude={"per_task", "mean_rewards"}))
    return point


def _completion_limit(stage: GRPOStage, config: TrainConfig, start: Path | None) -> GRPOStage:
    """The GRPO stage with ``max_completion_length`` derived from the expert when it is None."""
    if stage.max_completion_length is not None:
        return stage
    from transformers import AutoTokenizer

    from visioncreator.rl.train.lengths import with_completion_limit
    from visioncreator.rl.train.models import model_dir_for

    tokenizer = AutoTokenizer.from_pretrained(start or model_dir_for(config.policy))
    resolved, report = with_completion_limit(stage, tokenizer, seed=config.seed)
    if report is not None:
        _LOG.info(
            "GRPO stage %r: max_completion_length=%s derived from %d expert trajectories (median %.0f, longest %d "
            "tokens, task %s)",
            stage.name, resolved.max_completion_length, report.count, report.median, report.longest,
            report.longest_task,
        )  # fmt: skip
    return resolved


def _train(
    stage: SFTStage | GRPOStage, config: TrainConfig, start: Path | None, out: Path, resume: bool, progress: Event
) -> StageResult:
    from visioncreator.rl.train.grpo import train_grpo
    from visioncreator.rl.train.sft import train_sft

    if isinstance(stage, SFTStage):
        return train_sft(
            stage, config.policy, model_dir=start, output_dir=out, seed=config.seed, resume=resume, progress=progress
        )
    stage = _completion_limit(stage, config, start)
    result = train_grpo(
        stage, config.policy, model_dir=start, output_dir=out, seed=config.seed, resume=resume, progress=progress
    )
    limit = {"max_completion_length": float(stage.max_completion_length or 0)}
    return result.model_copy(update={"metrics": {**result.metrics, **limit}})


def _run_stage(
    config: TrainConfig,
    index: int,
    stage: SFTStage | GRPOStage,
    start: Path | None,
    out: Path,
    resume: bool,
    progress: Event | None,
) -> StageRecord:
    """Train one stage from ``start`` (None: the policy's model) into ``out``; its record, also in ``stage.json``."""
    from visioncreator.rl.train.models import model_dir_for

    total = len(config.stages)
    _emit(progress, "stage_start", index=index, total=total, name=stage.name, kind=stage.kind, dir=str(out))
    began = time.perf_counter()

    def step(entry: dict[str, Any]) -> None:
        _emit(progress, "step", stage=stage.name, kind=stage.kind, **entry)

    result = _train(stage, config, start, out, resume, step)
    record = StageRecord(
        index=index,
        name=stage.name,
        kind=stage.kind,
        model_dir=str(result.model_dir),
        start_model=str(start or model_dir_for(config.policy)),
        metrics=dict(result.metrics),
        log_history=list(result.log_history),
        wall_s=time.perf_counter() - began,
    )
    (out / MARKER).write_text(record.model_dump_json(indent=2))
    _emit(progress, "stage_end", index=index, total=total, name=stage.name, kind=stage.kind,
          model_dir=record.model_dir, wall_s=record.wall_s)  # fmt: skip
    return record


def run_stages(
    config: TrainConfig,
    *,
    kinds: Sequence[Literal["sft", "grpo"]] | None = None,
    resume: bool = True,
    progress: Event | None = None,
) -> RunSummary:
    """Train ``config``'s stages in order, each from the previous one's final model.

    Args:
        config: Policy, output directory, stages, held-out tasks.
        kinds: Only run stages of these kinds (others are neither run nor required); None runs all.
        resume: Skip finished stages (``stage.json``) and continue interrupted ones from their
            latest checkpoint; False trains every selected stage from scratch.
        progress: Receives ``stage_start``, ``step`` (each logged step), ``stage_end``,
            ``stage_skip``, ``eval_task`` and ``eval`` events.

    Returns:
        The stage records, the final model and the curves (also written to ``curves.json``).

    """
    from visioncreator.rl.train.models import model_dir_for

    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    records: list[StageRecord] = []
    skipped: list[str] = []
    curves = Curves()
    start: Path | None = None
    initial = _eval(config, model_dir_for(config.policy), root / "eval-initial.json", "initial", resume, progress)
    if initial is not None:
        curves.evals.append(initial)
    total = len(config.stages)
    for index, stage in enumerate(config.stages, start=1):
        out = stage_dir(root, index, stage)
        marker = out / MARKER
        if kinds is not None and stage.kind not in kinds:
            # Not run now; a later stage still starts from its model if it finished earlier.
            if resume and marker.is_file():
                start = Path(StageRecord.model_validate_json(marker.read_text()).model_dir)
            continue
        if resume and marker.is_file():
            record = StageRecord.model_validate_json(marker.read_text())
            skipped.append(out.name)
            _emit(progress, "stage_skip", index=index, total=total, name=stage.name, kind=stage.kind, dir=str(out))
        else:
            record = _run_stage(config, index, stage, start, out, resume, progress)
        records.append(record)
        start = Path(record.model_dir)
        curves.stages.append(StageCurve(name=stage.name, kind=stage.kind, steps=curve_steps(record.log_history)))
        point = _eval(config, start, out / "eval.json", out.name, resume, progress)
        if point is not None:
            curves.evals.append(point)
        (root / CURVES).write_text(curves.model_dump_json(indent=2))
    (root / CURVES).write_text(curves.model_dump_json(indent=2))
    return RunSummary(
        output_dir=str(root),
        stages=records,
        skipped=skipped,
        final_model=str(start) if start is not None else None,
        curves=curves,
    )
