"""One GRPO stage with TRL: :func:`train_grpo`, whose generation replays the graph.

GRPO generates by replaying the graph (:class:`~visioncreator.rl.train.rollout.GraphRollout`) and
trains on the recorded ids and masks with :class:`~visioncreator.rl.train.trainer.GraphGRPOTrainer`
(degenerate-group counts, optional per-node advantages, mid-trajectory images for VLM policies).
Checkpoints, resume, progress and the final ``model/`` are the harness's
(:mod:`visioncreator.rl.train.harness`).

An optimiser step is ``groups_per_step`` whole groups (:func:`batching`: TRL generates them at
once and accumulates micro-batches of ``batch_size``), anchored to the start model by a KL term
(``beta``; under LoRA TRL takes the reference log-probs with the adapters switched off, in 1.16's
``_generate_and_score_completions``, so no copy is made), and ``num_iterations`` steps reuse one
batch of rollouts, where TRL's clipped importance ratio acts. :func:`build_grpo_trainer` builds the
trainer without training it (for inspection and tests).

Needs the ``rl`` extra; every heavy import is inside a function.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visioncreator.graph import ToolClient
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.records import CollectTask
from visioncreator.rl.train.config import GRPOStage, PolicyModel
from visioncreator.rl.train.device import Placement, process_count, resolve_placement
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
from visioncreator.rl.train.rollout import GraphRollout

__all__ = ["Batching", "batching", "build_grpo_trainer", "train_grpo"]


@dataclass(frozen=True)
class Batching:
    """How one optimiser step's rollouts split over processes and forward passes."""

    processes: int
    """Training processes (``accelerate launch --num_processes``; 1 otherwise)."""
    per_device: int
    """Rollouts per forward/backward pass (TRL's ``per_device_train_batch_size``)."""
    accumulation: int
    """Passes per optimiser step on each process (TRL's ``gradient_accumulation_steps``)."""


def batching(stage: GRPOStage, processes: int = 1) -> Batching:
    """One step = ``groups_per_step`` whole groups, each process rolling out its own whole groups.

    TRL generates once per ``gradient_accumulation_steps`` passes (its ``steps_per_generation``
    default), so its generation batch is exactly one step's ``groups_per_step * num_generations``
    rollouts and, with ``num_iterations=1``, every step is on-policy.

    Raises:
        TrainingError: ``groups_per_step`` is not a multiple of ``processes``, or ``batch_size`` does
            not divide one process's share of a step.

    """
    if stage.groups_per_step % processes:
        raise TrainingError(
            f"GRPO stage {stage.name!r}: groups_per_step={stage.groups_per_step} must be a multiple of the "
            f"{processes} training processes (each process rolls out whole groups)"
        )
    share = stage.groups_per_step // processes * stage.num_generations
    per_device = stage.batch_size or share
    if share % per_device:
        raise TrainingError(
            f"GRPO stage {stage.name!r}: batch_size={per_device} must divide each process's {share} rollouts per "
            f"step (groups_per_step * num_generations / processes)"
        )
    return Batching(processes=processes, per_device=per_device, accumulation=share // per_device)


def _tasks(stage: GRPOStage) -> list[CollectTask]:
    """The stage's tasks; enough of them for one step's groups (a step's groups are distinct tasks)."""
    from visioncreator.rl.train.tasks import load_tasks

    tasks = load_tasks(stage.tasks)
    if stage.groups_per_step > len(tasks):
        raise TrainingError(
            f"GRPO stage {stage.name!r}: groups_per_step={stage.groups_per_step} needs as many distinct tasks, "
            f"the task source gives {len(tasks)}"
        )
    return tasks


def _processor(stage: GRPOStage, policy: PolicyModel, tokenizer: Any) -> Any:
    """The VLM processor a vision-language model loads with (rollouts show it images), else None."""
    if hasattr(tokenizer, "image_processor"):
        return tokenizer
    if stage.observe != "inspect":
        raise TrainingError(
            f"GRPO stage {stage.name!r}: observe={stage.observe!r} shows the policy images, but "
            f"{policy.model!r} is a text model: use a vision-language model (e.g. tiny-vlm) or observe='inspect'"
        )
    return None


def _grpo_config(
    stage: GRPOStage,
    policy: PolicyModel,
    output_dir: Path,
    seed: int,
    weights: list[float],
    placement: Placement,
    batch: Batching,
) -> Any:
    """TRL's ``GRPOConfig`` of the stage (build it inside :func:`~visioncreator.rl.train.harness.quiet`)."""
    from trl.trainer.grpo_config import GRPOConfig

    args: dict[str, Any] = {
        **trl_args(stage, output_dir, seed, placement),
        "per_device_train_batch_size": batch.per_device,
        "gradient_accumulation_steps": batch.accumulation,
        "num_generations": stage.num_generations,
        "max_completion_length": stage.max_completion_length,
        "beta": stage.beta,
        "num_iterations": stage.num_iterations,
        "epsilon": stage.epsilon,
        # Dropout would make the importance ratio and the KL noisy even before any update.
        "disable_dropout": True,
        # TRL recomputes log-probs as logits / temperature: match the rollouts' sampling.
        "temperature": policy.temperature if policy.temperature > 0 else 1.0,
        "top_p": policy.top_p,
        "reward_weights": weights,
    }
    return GRPOConfig(**(args | stage.trl))


def build_grpo_trainer(
    stage: GRPOStage,
    policy: PolicyModel,
    *,
    model_dir: str | Path | None = None,
    output_dir: str | Path,
    seed: int = 0,
    progress: Progress | None = None,
    on_batch: Callable[[Mapping[str, Any]], None] | None = None,
    tools: Callable[[CollectConfig], ToolClient] | None = None,
) -> tuple[Any, Any, GraphRollout]:
    """The stage's :class:`~visioncreator.rl.train.trainer.GraphGRPOTrainer`, its tokenizer and its rollout.

    :func:`train_grpo` is this, then training and the final save; the arguments are the same.
    """
    from datasets import Dataset  # type: ignore[import-untyped,unused-ignore]

    from visioncreator.rl.train.lengths import with_completion_limit
    from visioncreator.rl.train.models import lora_config
    from visioncreator.rl.train.rollout import reward_functions
    from visioncreator.rl.train.served import ServedSession
    from visioncreator.rl.train.tasks import task_prompt
    from visioncreator.rl.train.trainer import GraphGRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    placement = resolve_placement(policy)
    batch = batching(stage, process_count(placement))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(stage)
    dataset = Dataset.from_list([{"prompt": task_prompt(t), "task_id": t.task_id} for t in tasks])
    start, model, tokenizer = load_start_model(policy, model_dir, placement)
    processor = _processor(stage, policy, tokenizer)
    text_tokenizer = tokenizer if processor is None else processor.tokenizer
    stage, _ = with_completion_limit(stage, text_tokenizer, seed=seed)  # no-op when the stage sets it
    funcs, weights = reward_functions(stage.rewards)
    with quiet():
        args = _grpo_config(stage, policy, out, seed, weights, placement, batch)
        rollout = GraphRollout(
            stage=stage, policy=policy, store=out / "store", seed=seed, tools=tools,
            call_seeds=stage.call_seeds, branch_at=stage.branch_at, observe=stage.observe, processor=processor,
        )  # fmt: skip
        served = ServedSession.attach(stage, policy, rollout, model_dir=start, output_dir=out)  # rollouts="served"
        trainer = GraphGRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(policy.lora),
            callbacks=[progress_callback(progress), *([served.callback()] if served is not None else [])],
            rollout=rollout,
            per_node_advantages=stage.per_node_advantages,
            node_rewards=stage.node_rewards,
            credit=stage.credit,
            credit_local_weight=stage.credit_local_weight,
            reward_weights=stage.rewards,
            on_batch=on_batch,
        )
    trainer.served_session = served
    return trainer, tokenizer, rollout


def train_grpo(
    stage: GRPOStage,
    policy: PolicyModel,
    *,
    model_dir: str | Path | None = None,
    output_dir: str | Path,
    seed: int = 0,
    resume: bool = True,
    progress: Progress | None = None,
    on_batch: Callable[[Mapping[str, Any]], None] | None = None,
    tools: Callable[[CollectConfig], ToolClient] | None = None,
) -> StageResult:
    """GRPO whose generation replays the graph, the loss on exactly the recorded ids and masks.

    Args:
        stage: Tasks, group size, steps, rewards and their weights, per-node advantages.
        policy: The model, and how it samples in rollouts (max_new_tokens, temperature, top_p).
        model_dir: Start weights; default the model ``policy.model`` names.
        output_dir: Checkpoints, the rollouts' image store (``store/``) and the final ``model/``.
        seed: Training seed and base run seed of the rollouts.
        resume: Continue from the latest checkpoint in ``output_dir``, if any.
        progress: Called with each log entry (``reward``, ``loss``, ``groups/degenerate``, ...).
        on_batch: Called with every scored generation batch TRL is about to train on (see
            :data:`visioncreator.rl.train.trainer.OnBatch`); for inspection and tests.
        tools: Makes the rollouts' tool client from their collect config; default the in-process
            synthetic server (:func:`visioncreator.rl.collection.collector.synthetic_tools`).

    Each optimiser step trains on ``stage.groups_per_step`` groups of ``num_generations`` rollouts
    (see :func:`batching`); with ``num_iterations`` above 1 each batch of rollouts serves that many
    steps. With ``beta > 0`` the loss has a KL term to the start model: under LoRA the start model
    is the same weights with the adapters off (TRL's way; no second copy), under full fine-tuning a
    frozen copy. Under ``accelerate launch`` every process rolls out its own groups.

    Raises:
        TrainingError: ``groups_per_step`` does not split over the processes, ``batch_size`` does
            not divide a process's share, or there are fewer tasks than ``groups_per_step``.
        ConfigError: ``policy.device``/``policy.dtype`` cannot run here.
        TrainingError: The stage shows images (``observe``) to a text model.

    """
    trainer, tokenizer, rollout = build_grpo_trainer(
        stage, policy, model_dir=model_dir, output_dir=output_dir, seed=seed, progress=progress,
        on_batch=on_batch, tools=tools,
    )  # fmt: skip
    out = Path(output_dir)
    with trainer.served_session or contextlib.nullcontext():  # a served stage starts its server first, stops it after
        final, metrics = train_and_save(trainer, tokenizer, out, resume)
    metrics |= {
        "groups": float(rollout.groups),
        "degenerate_groups": float(rollout.degenerate_groups),
        "refused_too_long": float(rollout.refused_too_long),
    }
    return StageResult(model_dir=final, log_history=list(trainer.state.log_history), metrics=metrics)
