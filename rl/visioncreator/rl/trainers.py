"""One training stage with TRL: :func:`train_sft` (``SFTTrainer``) and :func:`train_grpo` (``GRPOTrainer``).

Both write TRL checkpoints into ``output_dir`` every ``save_steps`` and resume from the latest
one when run again (``resume=True``), report progress through a ``TrainerCallback`` that calls
``progress(dict)`` on every log, and save the final weights (LoRA merged) into
``output_dir/model``, a plain model directory that the next stage,
:class:`~visioncreator.policy.local.TransformersPolicy` and vLLM load.

SFT learns from trajectories (a records file, given records, or the expert's, collected on the
stage's tasks), filtered by the stage's selections and tokenized by
:func:`~visioncreator.rl.exports.sft_dataset`, so the loss is exactly on the assistant turns.
GRPO generates by replaying the graph (:class:`~visioncreator.rl.rollout.GraphRollout`) and
trains on the recorded ids and masks with :class:`~visioncreator.rl.grpo_trainer.GraphGRPOTrainer`
(degenerate-group counts, optional per-node advantages, mid-trajectory images for VLM policies).

Needs the ``rl`` extra; every heavy import is inside a function.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.graph import ToolClient, Trajectory
from visioncreator.rl.collector import CollectConfig
from visioncreator.rl.config import GRPOStage, PolicyModel, Selection, SFTStage
from visioncreator.rl.errors import RLError
from visioncreator.rl.rewards import RewardWeights, score
from visioncreator.rl.rewards_base import RewardContext

__all__ = [
    "Progress",
    "StageResult",
    "TrainingError",
    "select_trajectories",
    "train_grpo",
    "train_sft",
]

Progress = Callable[[dict[str, Any]], None]
"""Called with every TRL log entry plus ``step`` and ``max_steps``."""

MODEL_SUBDIR = "model"


class TrainingError(RLError):
    """A stage that cannot train (no data selected, an inconsistent batch size); the message says why."""


class StageResult(BaseModel):
    """What a finished stage leaves."""

    model_config = ConfigDict(frozen=True)

    model_dir: Path = Field(description="The final weights (LoRA merged) with the tokenizer: a model directory.")
    log_history: list[dict[str, Any]] = Field(description="TRL's log history (loss, reward, ... per logged step).")
    metrics: dict[str, float] = Field(description="Train metrics, plus counts (examples, groups, degenerate groups).")


def _context(trajectory: Trajectory) -> RewardContext:
    reward_context = getattr(trajectory, "reward_context", None)
    return reward_context() if callable(reward_context) else RewardContext()


def _keeps(selection: Selection, trajectory: Trajectory) -> bool:
    if selection.splits and trajectory.task.split not in selection.splits:
        return False
    if not selection.min_rewards and not selection.require_success:
        return True
    result = score(trajectory, _context(trajectory), RewardWeights())
    if any(result.components[name].value < low for name, low in selection.min_rewards.items()):
        return False
    return not selection.require_success or result.components["outcome"].details.get("success") == 1.0


def select_trajectories(trajectories: Sequence[Trajectory], selections: Sequence[Selection]) -> list[Trajectory]:
    """The union of ``selections`` over ``trajectories``, in their order, each kept once.

    Raises:
        ValueError: A selection names an unknown reward.

    """
    known = {"format", "tool", "result", "plan", "reflection", "outcome"}
    for selection in selections:
        unknown = set(selection.min_rewards) - known
        if unknown:
            raise ValueError(f"selection min_rewards names unknown rewards {sorted(unknown)}; known: {sorted(known)}")
    chosen: set[int] = set()
    for selection in selections:
        taken = 0
        for i, trajectory in enumerate(trajectories):
            if selection.limit is not None and taken >= selection.limit:
                break
            if _keeps(selection, trajectory):
                taken += 1
                chosen.add(i)
    return [t for i, t in enumerate(trajectories) if i in chosen]


def _progress_callback(progress: Progress | None) -> Any:
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:
            if progress is not None:
                progress({"step": state.global_step, "max_steps": state.max_steps, **dict(logs or {})})

    return _Progress()


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence transformers 5's renaming notices that TRL 1.16 triggers on every step (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning
        )
        yield


def _run_trainer(trainer: Any, output_dir: Path, resume: bool) -> Any:
    """Train (from the latest checkpoint when resuming), with TRL's log printer replaced by ``progress``."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    with _quiet():
        return trainer.train(resume_from_checkpoint=_last_checkpoint(output_dir, resume))


def _last_checkpoint(output_dir: Path, resume: bool) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not resume or not output_dir.is_dir():
        return None
    last: str | None = get_last_checkpoint(str(output_dir))  # type: ignore[no-untyped-call]
    return last


def _common_args(stage: SFTStage | GRPOStage, output_dir: Path, seed: int) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "max_steps": stage.max_steps,
        "learning_rate": stage.learning_rate,
        "save_steps": stage.save_steps,
        "save_strategy": "steps",
        "logging_steps": stage.logging_steps,
        "seed": seed,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "disable_tqdm": True,
    }


def _setup(policy: PolicyModel, model_dir: str | Path | None) -> tuple[Path, Any, Any]:
    from visioncreator.rl.models import load_policy_model, model_dir_for

    start = Path(model_dir) if model_dir is not None else model_dir_for(policy)
    model, tokenizer = load_policy_model(start, torch_threads=policy.torch_threads)
    return start, model, tokenizer


def _finish(
    trainer: Any, tokenizer: Any, output_dir: Path, train_metrics: Mapping[str, Any]
) -> tuple[Path, dict[str, float]]:
    from visioncreator.rl.models import save_policy_model

    model = trainer.accelerator.unwrap_model(trainer.model)
    final = save_policy_model(model, tokenizer, output_dir / MODEL_SUBDIR)
    metrics = {k: float(v) for k, v in train_metrics.items() if isinstance(v, int | float)}
    return final, metrics


def _sft_trajectories(stage: SFTStage, output_dir: Path, seed: int) -> list[Trajectory]:
    from visioncreator.rl.records import read_records

    if stage.records is not None:
        path = Path(stage.records)
        if not path.is_file():
            raise TrainingError(f"SFT stage {stage.name!r}: records file {path} does not exist")
        return list(read_records(path))
    return list(asyncio.run(_collect_expert(stage, output_dir, seed)))


async def _collect_expert(stage: SFTStage, output_dir: Path, seed: int) -> list[Trajectory]:
    from visioncreator.graph import expert_policy
    from visioncreator.policy import ExpertConfig
    from visioncreator.rl.collector import CollectConfig, collect_to, synthetic_tools
    from visioncreator.rl.records import read_records
    from visioncreator.rl.rollout import load_tasks

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

    Raises:
        TrainingError: No trajectory passes the selections, or none can be tokenized.

    """
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from visioncreator.rl.exports import sft_dataset
    from visioncreator.rl.models import lora_config

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trajectories = list(records) if records is not None else _sft_trajectories(stage, out, seed)
    chosen = select_trajectories(trajectories, stage.select)
    if not chosen:
        raise TrainingError(
            f"SFT stage {stage.name!r}: none of {len(trajectories)} trajectories passes the selections {stage.select}"
        )
    _, model, tokenizer = _setup(policy, model_dir)
    dataset = sft_dataset(chosen, tokenizer)
    columns = set(dataset.column_names)
    mask_column = "assistant_masks" if "assistant_masks" in columns else "completion_mask"
    if mask_column in columns and not any(sum(m[: stage.max_length]) for m in dataset[mask_column]):
        raise TrainingError(
            f"SFT stage {stage.name!r}: max_length={stage.max_length} cuts every example before its first policy "
            f"token ({len(chosen)} trajectories); raise max_length"
        )
    with _quiet():
        args = SFTConfig(
            **_common_args(stage, out, seed),
            per_device_train_batch_size=stage.batch_size,
            gradient_accumulation_steps=stage.gradient_accumulation_steps,
            max_length=stage.max_length,
            # A pre-tokenized completion_mask only becomes labels with completion_only_loss.
            completion_only_loss="completion_mask" in columns,
            **stage.trl,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(policy.lora),
            callbacks=[_progress_callback(progress)],
        )
    output = _run_trainer(trainer, out, resume)
    final, metrics = _finish(trainer, tokenizer, out, output.metrics)
    metrics |= {"trajectories": float(len(trajectories)), "examples": float(len(chosen))}
    return StageResult(model_dir=final, log_history=list(trainer.state.log_history), metrics=metrics)


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
            :data:`visioncreator.rl.grpo_trainer.OnBatch`); for inspection and tests.
        tools: Makes the rollouts' tool client from their collect config; default the in-process
            synthetic server (:func:`visioncreator.rl.collector.synthetic_tools`).

    Raises:
        TrainingError: The batch size is not a multiple of ``num_generations``.

    """
    from datasets import Dataset  # type: ignore[import-untyped,unused-ignore]
    from trl.trainer.grpo_config import GRPOConfig

    from visioncreator.rl.grpo_trainer import GraphGRPOTrainer
    from visioncreator.rl.models import lora_config
    from visioncreator.rl.rollout import GraphRollout, load_tasks, reward_functions, task_prompt

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    batch = stage.batch_size or stage.num_generations
    if batch % stage.num_generations:
        raise TrainingError(
            f"GRPO stage {stage.name!r}: batch_size={batch} must be a multiple of "
            f"num_generations={stage.num_generations}"
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(stage.tasks)
    if batch // stage.num_generations > len(tasks):
        raise TrainingError(
            f"GRPO stage {stage.name!r}: a batch of {batch} needs {batch // stage.num_generations} tasks "
            f"({stage.num_generations} generations each), the task source gives {len(tasks)}"
        )
    dataset = Dataset.from_list([{"prompt": task_prompt(t), "task_id": t.task_id} for t in tasks])
    _, model, tokenizer = _setup(policy, model_dir)
    funcs, weights = reward_functions(stage.rewards)
    with _quiet():
        args = GRPOConfig(
            **_common_args(stage, out, seed),
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
        rollout = GraphRollout(stage=stage, policy=policy, store=out / "store", seed=seed, tools=tools)
        trainer = GraphGRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(policy.lora),
            callbacks=[_progress_callback(progress)],
            rollout=rollout,
            per_node_advantages=stage.per_node_advantages,
            node_rewards=stage.node_rewards,
            reward_weights=stage.rewards,
            on_batch=on_batch,
        )
    output = _run_trainer(trainer, out, resume)
    final, metrics = _finish(trainer, tokenizer, out, output.metrics)
    metrics |= {"groups": float(rollout.groups), "degenerate_groups": float(rollout.degenerate_groups)}
    return StageResult(model_dir=final, log_history=list(trainer.state.log_history), metrics=metrics)
