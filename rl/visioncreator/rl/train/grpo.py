"""One GRPO stage with TRL: :func:`train_grpo`, whose generation replays the graph.

GRPO generates by replaying the graph (:class:`~visioncreator.rl.train.rollout.GraphRollout`) and
trains on the recorded ids and masks with :class:`~visioncreator.rl.train.trainer.GraphGRPOTrainer`
(degenerate-group counts, optional per-node advantages, mid-trajectory images for VLM policies).
Checkpoints, resume, progress and the final ``model/`` are the harness's
(:mod:`visioncreator.rl.train.harness`).

Needs the ``rl`` extra; every heavy import is inside a function.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from visioncreator.graph import ToolClient
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.records import CollectTask
from visioncreator.rl.train.config import GRPOStage, PolicyModel
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

__all__ = ["train_grpo"]


def _batch_size(stage: GRPOStage) -> int:
    """The generation batch: ``stage.batch_size`` (default one group), a multiple of ``num_generations``."""
    batch = stage.batch_size or stage.num_generations
    if batch % stage.num_generations:
        raise TrainingError(
            f"GRPO stage {stage.name!r}: batch_size={batch} must be a multiple of "
            f"num_generations={stage.num_generations}"
        )
    return batch


def _tasks(stage: GRPOStage, batch: int) -> list[CollectTask]:
    """The stage's tasks; enough of them for one batch of groups."""
    from visioncreator.rl.train.tasks import load_tasks

    tasks = load_tasks(stage.tasks)
    if batch // stage.num_generations > len(tasks):
        raise TrainingError(
            f"GRPO stage {stage.name!r}: a batch of {batch} needs {batch // stage.num_generations} tasks "
            f"({stage.num_generations} generations each), the task source gives {len(tasks)}"
        )
    return tasks


def _grpo_config(
    stage: GRPOStage, policy: PolicyModel, output_dir: Path, seed: int, batch: int, weights: list[float]
) -> Any:
    """TRL's ``GRPOConfig`` of the stage (build it inside :func:`~visioncreator.rl.train.harness.quiet`)."""
    from trl.trainer.grpo_config import GRPOConfig

    return GRPOConfig(
        **trl_args(stage, output_dir, seed),
        per_device_train_batch_size=batch,
        num_generations=stage.num_generations,
        max_completion_length=stage.max_completion_length,
        beta=stage.beta,
        # TRL recomputes log-probs as logits / temperature: match the rollouts' sampling.
        temperature=policy.temperature if policy.temperature > 0 else 1.0,
        top_p=policy.top_p,
        reward_weights=weights,
        **stage.trl,
    )


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

    Raises:
        TrainingError: The batch size is not a multiple of ``num_generations``.

    """
    from datasets import Dataset  # type: ignore[import-untyped,unused-ignore]

    from visioncreator.rl.train.lengths import with_completion_limit
    from visioncreator.rl.train.models import lora_config
    from visioncreator.rl.train.rollout import GraphRollout, reward_functions
    from visioncreator.rl.train.served import ServedSession
    from visioncreator.rl.train.tasks import task_prompt
    from visioncreator.rl.train.trainer import GraphGRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    batch = _batch_size(stage)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(stage, batch)
    dataset = Dataset.from_list([{"prompt": task_prompt(t), "task_id": t.task_id} for t in tasks])
    start, model, tokenizer = load_start_model(policy, model_dir)
    stage, _ = with_completion_limit(stage, tokenizer, seed=seed)  # no-op when the stage sets it
    funcs, weights = reward_functions(stage.rewards)
    with quiet():
        args = _grpo_config(stage, policy, out, seed, batch, weights)
        rollout = GraphRollout(
            stage=stage, policy=policy, store=out / "store", seed=seed, tools=tools,
            call_seeds=stage.call_seeds, branch_at=stage.branch_at,
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
    with served or contextlib.nullcontext():  # the served session starts its server first, stops it after
        final, metrics = train_and_save(trainer, tokenizer, out, resume)
    metrics |= {
        "groups": float(rollout.groups),
        "degenerate_groups": float(rollout.degenerate_groups),
        "refused_too_long": float(rollout.refused_too_long),
    }
    return StageResult(model_dir=final, log_history=list(trainer.state.log_history), metrics=metrics)
