"""GRPO's optimisation through train_grpo's trainer: several groups per step, the KL anchor (LoRA: the
adapters switched off, no copy; full fine-tuning: a frozen copy), and a second iteration on the same
rollouts, where the importance ratio leaves 1 and clipping acts.

The policy is the warmed-up tiny model of ``tests/rl/conftest.py``: its sampled plans sometimes parse
and sometimes do not, so a group carries a learning signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.rl.conftest import GRPO_POLICY, GRPO_TASKS
from visioncreator.rl.train.config import GRPOStage, LoraSpec, TaskSource
from visioncreator.rl.train.grpo import batching, build_grpo_trainer
from visioncreator.rl.train.harness import TrainingError, quiet

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

# TRL 1.16 reads model.is_gradient_checkpointing, deprecated in transformers 5.24 (a FutureWarning).
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def _stage(**fields: Any) -> GRPOStage:
    base: dict[str, Any] = {
        "tasks": GRPO_TASKS, "groups_per_step": 1, "num_generations": 4, "max_turns": 1,
        "max_completion_length": 256, "save_steps": 100,
    }  # fmt: skip
    return GRPOStage(**(base | fields))


def _train(stage: GRPOStage, warm_dir: Path, out: Path, seed: int, **policy: Any) -> tuple[Any, list[Any], list[Any]]:
    batches: list[Mapping[str, Any]] = []
    logs: list[dict[str, Any]] = []
    trainer, _, _ = build_grpo_trainer(
        stage, GRPO_POLICY.model_copy(update=policy), model_dir=warm_dir, output_dir=out, seed=seed,
        progress=logs.append, on_batch=batches.append,
    )  # fmt: skip
    with quiet():
        trainer.train()  # not train_and_save: its final save merges the LoRA adapters into the model
    return trainer, batches, [e for e in logs if "loss" in e]


def _logps(trainer: Any, model: Any, batch: Mapping[str, Any]) -> Any:
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, batch["completion_ids"].size(1))
    return logps


def test_with_lora_the_kl_reference_is_the_start_model_with_the_adapters_off(warm_dir: Path, tmp_path: Path) -> None:
    stage = _stage(max_steps=2, beta=0.1, learning_rate=2e-2)
    trainer, batches, steps = _train(stage, warm_dir, tmp_path, seed=1, lora=LoraSpec(r=4, alpha=8))

    assert trainer.ref_model is None  # no second model: TRL switches the adapters off
    assert [b["rollouts"][0].group for b in batches] == [0, 0]
    assert any(b["advantages"].abs().sum() > 0 for b in batches[:1]), "step 1 had no signal: pick another seed"
    # Step 1: adapters start at zero, so the model is its reference: KL exactly 0. Step 2: it moved.
    assert [e["step"] for e in steps] == [1, 2]
    assert steps[0]["kl"] == 0.0
    assert steps[1]["kl"] > 0.0
    # The reference log-probs TRL used at step 2 are the model's with the adapters off.
    model = trainer.accelerator.unwrap_model(trainer.model)
    ref = batches[1]["ref_per_token_logps"]
    with model.disable_adapter():
        assert torch.allclose(_logps(trainer, trainer.model, batches[1]), ref, atol=1e-5)
    assert not torch.allclose(_logps(trainer, trainer.model, batches[1]), ref, atol=1e-5)


def test_full_fine_tuning_anchors_to_a_frozen_copy_and_a_second_iteration_clips(warm_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    # num_iterations=2: one batch of rollouts serves two optimiser steps.
    stage = _stage(max_steps=2, beta=0.1, num_iterations=2, epsilon=0.02, learning_rate=1e-3)
    trainer, batches, steps = _train(stage, warm_dir, tmp_path, seed=1)

    [batch] = batches  # generated once for both steps
    assert batch.get("old_per_token_logps") is not None
    assert batch["advantages"].abs().sum() > 0, "the group had no signal: pick another seed"
    start = AutoModelForCausalLM.from_pretrained(warm_dir)
    reference = trainer.ref_model
    assert reference is not None
    assert reference is not trainer.accelerator.unwrap_model(trainer.model)
    trained = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    for (name, before), (_, ref) in zip(start.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(before, ref), name  # frozen at the start weights
        assert id(ref) not in trained
    # Iteration 1: the model is the rollout's (ratio 1, nothing clipped) and its own reference (KL 0).
    assert steps[0]["clip_ratio/region_mean"] == 0.0
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-7)
    # Iteration 2, same rollouts, one update later: the ratio has left [1 - eps, 1 + eps], clipping acts.
    assert steps[1]["clip_ratio/region_mean"] > 0.0
    assert steps[1]["kl"] > 1e-7
    ratio = torch.exp(_logps(trainer, trainer.model, batch) - batch["old_per_token_logps"])
    assert (ratio - 1).abs().max() > stage.epsilon


def test_several_groups_make_one_optimiser_step_with_accumulated_micro_batches(warm_dir: Path, tmp_path: Path) -> None:
    tasks = TaskSource(splits=("single",), limit=2, fault_rate=0.0)
    stage = _stage(tasks=tasks, groups_per_step=2, num_generations=2, batch_size=2, max_steps=1, beta=0.0)
    trainer, batches, steps = _train(stage, warm_dir, tmp_path, seed=0)

    args = trainer.args
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.generation_batch_size) == (2, 2, 4)
    [batch] = batches
    rollouts = batch["rollouts"]
    assert [r.group for r in rollouts] == [0, 0, 1, 1]
    assert len({r.record.task_id for r in rollouts}) == 2  # two tasks, one group each
    assert [e["step"] for e in steps] == [1]
    assert steps[0]["groups/total"] == 2.0
    assert trainer.state.global_step == 1


def test_batching_splits_whole_groups_over_processes() -> None:
    stage = GRPOStage(groups_per_step=4, num_generations=4, batch_size=2)
    assert batching(stage, 1).accumulation == 8
    two = batching(stage, 2)
    assert (two.per_device, two.accumulation) == (2, 4)
    assert batching(GRPOStage(groups_per_step=2, num_generations=4), 1).per_device == 8
    with pytest.raises(TrainingError, match="groups_per_step=4 must be a multiple of the 3 training processes"):
        batching(stage, 3)
    with pytest.raises(TrainingError, match="batch_size=8 must divide each process's 4 rollouts"):
        batching(GRPOStage(groups_per_step=2, num_generations=4, batch_size=8), 2)
    with pytest.raises(ValueError, match="batch_size=3 must divide the rollouts of one step"):
        GRPOStage(groups_per_step=2, num_generations=4, batch_size=3)
