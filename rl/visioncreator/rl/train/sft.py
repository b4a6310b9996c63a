"""One SFT stage with TRL's ``SFTTrainer``: :func:`train_sft`.

SFT learns from trajectories (a records file, given records, or the expert's, collected on the
stage's tasks), filtered by the stage's selections
(:func:`~visioncreator.rl.train.selection.select_trajectories`) and tokenized by
:func:`~visioncreator.rl.exports.sft_dataset`, so the loss is exactly on the assistant turns. No
example is cut: one longer than the stage's ``max_length`` is dropped and counted.
TRL (the ``rl`` extra) is imported by :func:`train_sft` itself; checkpoints, resume, progress
and the final ``model/`` come from :mod:`visioncreator.rl.train.harness`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visioncreator.graph import Trajectory
from visioncreator.rl.train.config import PolicyModel, SFTStage
from visioncreator.rl.train.device import Placement, main_process_first, resolve_placement
from visioncreator.rl.train.harness import (
    Progress,
    StageResult,
    TrainingError,
    load_start_model,
    progress_callback,
    quiet,
    train_and_save,
    trl_args,
)
from visioncreator.rl.train.lengths import context_length, round_up
from visioncreator.rl.train.selection import select_trajectories

__all__ = ["train_sft"]

_LOG = logging.getLogger(__name__)


def _sft_trajectories(stage: SFTStage, output_dir: Path, seed: int) -> list[Trajectory]:
    from visioncreator.rl.collection.records import read_records

    if stage.records is not None:
        path = Path(stage.records)
        if not path.is_file():
            raise TrainingError(f"SFT stage {stage.name!r}: records file {path} does not exist")
        return list(read_records(path))
    return list(asyncio.run(_collect_expert(stage, output_dir, seed)))


async def _collect_expert(stage: SFTStage, output_dir: Path, seed: int) -> list[Trajectory]:
    from visioncreator.graph import expert_policy
    from visioncreator.policy import ExpertConfig
    from visioncreator.rl.collection.collector import synthetic_tools
    from visioncreator.rl.collection.config import CollectConfig
    from visioncreator.rl.collection.records import read_records
    from visioncreator.rl.collection.run import collect_to
    from visioncreator.rl.train.tasks import load_tasks

    config = CollectConfig(
        group_size=stage.group_size, seed=seed, fault_rate=stage.tasks.fault_rate, store=output_dir / "store"
    )
    path = output_dir / "expert-records.jsonl"
    async with synthetic_tools(config) as tools:
        # collect_to skips what an interrupted run already wrote.
        await collect_to(
            path,
            load_tasks(stage.tasks),
            policy=expert_policy(ExpertConfig(**stage.expert)),
            tools=tools,
            config=config,
        )
    return list(read_records(path))


def _selected(stage: SFTStage, trajectories: Sequence[Trajectory]) -> list[Trajectory]:
    """The trajectories the stage's selections keep; at least one."""
    chosen = select_trajectories(trajectories, stage.select)
    if not chosen:
        raise TrainingError(
            f"SFT stage {stage.name!r}: none of {len(trajectories)} trajectories passes the selections {stage.select}"
        )
    return chosen


def _fit_examples(stage: SFTStage, dataset: Any, context: int | None) -> tuple[Any, int, dict[str, float]]:
    """The examples within the stage's ``max_length`` (longer ones dropped, never cut), the limit and counts.

    Without a ``max_length`` the limit is the longest example rounded up to a multiple of 64, at most
    the model's ``context``: only examples the model cannot hold are dropped. A cut example would
    train on its head while its selection judged all of it.
    """
    lengths = [len(ids) for ids in dataset["input_ids"]]
    derived = round_up(max(lengths)) if context is None else min(round_up(max(lengths)), context)
    limit = stage.max_length if stage.max_length is not None else derived
    keep = [i for i, n in enumerate(lengths) if n <= limit]
    if not keep:
        raise TrainingError(
            f"SFT stage {stage.name!r}: max_length={limit} drops every example ({len(lengths)} examples, the "
            f"shortest has {min(lengths)} tokens); raise max_length, or leave it unset to fit the longest"
        )
    dropped = len(lengths) - len(keep)
    if dropped:
        _LOG.warning(
            "SFT stage %r: dropped %d of %d examples longer than max_length=%d (the longest has %d tokens); "
            "over-long examples are dropped, never cut",
            stage.name, dropped, len(lengths), limit, max(lengths),
        )  # fmt: skip
    metrics = {"max_length": float(limit), "dropped_too_long": float(dropped), "longest_example": float(max(lengths))}
    return (dataset.select(keep) if dropped else dataset), limit, metrics


def _sft_config(
    stage: SFTStage, output_dir: Path, seed: int, dataset: Any, max_length: int, placement: Placement
) -> Any:
    """TRL's ``SFTConfig`` of the stage (build it inside :func:`~visioncreator.rl.train.harness.quiet`)."""
    from trl.trainer.sft_config import SFTConfig

    args: dict[str, Any] = {
        **trl_args(stage, output_dir, seed, placement),
        "per_device_train_batch_size": stage.batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        "max_length": max_length,
        # A pre-tokenized completion_mask only becomes labels with completion_only_loss.
        "completion_only_loss": "completion_mask" in dataset.column_names,
    }
    return SFTConfig(**(args | stage.trl))


def train_sft(
    stage: SFTStage,
    policy: PolicyModel,
    *,
    model_dir: str | Path | None = None,
    output_dir: str | Path,
    seed: int = 0,
    resume: bool = True,
    records: Sequence[Trajectory] | None = None,
    progress: Progress | None = None,
) -> StageResult:
    """Supervised fine-tuning on selected trajectories, the loss on the policy's turns only.

    Args:
        stage: Steps, learning rate, batch, selections, where the trajectories come from.
        policy: The model (LoRA or full fine-tuning, torch threads).
        model_dir: Start weights; default the model ``policy.model`` names.
        output_dir: Checkpoints, collected expert records (``expert-records.jsonl``) and the final ``model/``.
        seed: Training seed (and the expert collection's run seed).
        resume: Continue from the latest checkpoint in ``output_dir``, if any.
        records: Trajectories to learn from, instead of ``stage.records`` or an expert collection.
        progress: Called with each log entry.

    An example longer than ``stage.max_length`` is dropped, never cut: the metrics count them
    (``dropped_too_long``, with ``max_length`` and ``longest_example``) and a warning names how many.

    Under ``accelerate launch`` the main process collects the expert's trajectories (when
    needed) and the others read them; each process trains on its share of every step's batch.

    Raises:
        ConfigError: ``policy.device``/``policy.dtype`` cannot run here.
        TrainingError: No trajectory passes the selections, none can be tokenized, or every one is
            longer than ``stage.max_length``.

    """
    from trl.trainer.sft_trainer import SFTTrainer

    from visioncreator.rl.exports import sft_dataset
    from visioncreator.rl.train.models import lora_config

    placement = resolve_placement(policy)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if records is not None:
        trajectories = list(records)
    else:
        with main_process_first(placement):  # the others then read what the main process collected
            trajectories = _sft_trajectories(stage, out, seed)
    chosen = _selected(stage, trajectories)
    _, model, tokenizer = load_start_model(policy, model_dir, placement)
    dataset, max_length, length_metrics = _fit_examples(
        stage, sft_dataset(chosen, tokenizer), context_length(tokenizer)
    )
    with quiet():
        trainer = SFTTrainer(
            model=model,
            args=_sft_config(stage, out, seed, dataset, max_length, placement),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(policy.lora),
            callbacks=[progress_callback(progress)],
        )
    final, metrics = train_and_save(trainer, tokenizer, out, resume)
    metrics |= {"trajectories": float(len(trajectories)), "examples": float(len(dataset))} | length_metrics
    return StageResult(model_dir=final, log_history=list(trainer.state.log_history), metrics=metrics)
