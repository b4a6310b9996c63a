"""train_sft: TRL SFTTrainer on expert trajectories of the real graph, on a tiny random model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from visioncreator.rl.train.config import PolicyModel, Selection, SFTStage, TaskSource
from visioncreator.rl.train.harness import StageResult, TrainingError
from visioncreator.rl.train.models import load_policy_model, model_dir_for
from visioncreator.rl.train.sft import train_sft

pytest.importorskip("trl")

POLICY = PolicyModel(model="tiny", torch_threads=1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir_for(POLICY, tmp_path_factory.mktemp("models"))


def _stage(max_steps: int, **fields: Any) -> SFTStage:
    base: dict[str, Any] = {
        "tasks": TaskSource(splits=("single",), limit=2, fault_rate=0.0),
        "max_steps": max_steps,
        "save_steps": 1,
        "batch_size": 1,
        "learning_rate": 1e-3,
        "max_length": 4096,
    }
    return SFTStage.model_validate({**base, **fields})


def _weight(model_dir: Path) -> Any:
    model, _ = load_policy_model(model_dir)
    return model.get_input_embeddings().weight.detach().clone()


def test_two_sft_steps_train_on_expert_trajectories_and_change_the_weights(tiny_dir: Path, tmp_path: Path) -> None:
    import torch

    seen: list[dict[str, Any]] = []
    result = train_sft(_stage(2), POLICY, model_dir=tiny_dir, output_dir=tmp_path / "sft", progress=seen.append)
    assert isinstance(result, StageResult)
    assert result.model_dir == tmp_path / "sft" / "model"
    assert result.metrics["examples"] == 2  # the expert succeeds on both fault-free tasks
    assert [e["step"] for e in seen if "loss" in e] == [1, 2]
    assert not torch.equal(_weight(tiny_dir), _weight(result.model_dir))
    assert (tmp_path / "sft" / "checkpoint-2").is_dir()
    assert (tmp_path / "sft" / "expert-records.jsonl").read_text().count("\n") == 2


def test_an_interrupted_stage_resumes_from_its_checkpoint(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    first = train_sft(_stage(1), POLICY, model_dir=tiny_dir, output_dir=out)
    assert [e["step"] for e in first.log_history if "loss" in e] == [1]
    second = train_sft(_stage(2), POLICY, model_dir=tiny_dir, output_dir=out)
    # Step 1 comes from the checkpoint's trainer state: only step 2 ran again.
    losses = [e for e in second.log_history if "loss" in e]
    assert [e["step"] for e in losses] == [1, 2]
    assert losses[0] == next(e for e in first.log_history if "loss" in e)
    assert (out / "checkpoint-2").is_dir()


def test_a_selection_that_keeps_nothing_is_an_error(tiny_dir: Path, tmp_path: Path) -> None:
    stage = _stage(1, select=(Selection(splits=("multi",)),))
    with pytest.raises(TrainingError, match="passes the selections"):
        train_sft(stage, POLICY, model_dir=tiny_dir, output_dir=tmp_path / "sft")


def test_a_max_length_that_cuts_every_policy_token_is_an_error(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="max_length=16 cuts every example"):
        train_sft(_stage(1, max_length=16), POLICY, model_dir=tiny_dir, output_dir=tmp_path / "sft")
