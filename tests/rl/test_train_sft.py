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


def test_a_max_length_that_drops_every_example_is_an_error(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="max_length=16 drops every example"):
        train_sft(_stage(1, max_length=16), POLICY, model_dir=tiny_dir, output_dir=tmp_path / "sft")


def _expert_records(store: Path) -> list[Any]:
    import asyncio

    from visioncreator.rl.train.lengths import expert_trajectories

    source = TaskSource(splits=("single",), limit=4, fault_rate=0.0)
    return asyncio.run(expert_trajectories(source, store=store))


def test_an_over_long_example_is_dropped_and_counted_not_cut(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoTokenizer

    from visioncreator.rl.train.lengths import trajectory_lengths

    records = _expert_records(tmp_path / "store")
    totals = trajectory_lengths(records, AutoTokenizer.from_pretrained(tiny_dir)).total
    longest = max(totals)
    assert totals.count(longest) < len(totals)  # something to drop, something to keep
    limit = max(t for t in totals if t < longest)
    with caplog.at_level("WARNING", logger="visioncreator.rl.train.sft"):
        result = train_sft(
            _stage(1, max_length=limit), POLICY, model_dir=tiny_dir, output_dir=tmp_path / "sft", records=records
        )
    dropped = totals.count(longest)
    assert result.metrics["dropped_too_long"] == dropped
    assert result.metrics["examples"] == len(records) - dropped
    assert result.metrics["max_length"] == limit
    assert result.metrics["longest_example"] == longest
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"dropped {dropped} of {len(records)} examples longer than max_length={limit}" in warning
    assert f"the longest has {longest} tokens" in warning


def test_without_max_length_the_longest_example_sets_it(tiny_dir: Path, tmp_path: Path) -> None:
    records = _expert_records(tmp_path / "store")
    result = train_sft(
        _stage(1, max_length=None), POLICY, model_dir=tiny_dir, output_dir=tmp_path / "sft", records=records
    )
    assert result.metrics["dropped_too_long"] == 0
    assert result.metrics["examples"] == len(records)
    assert result.metrics["max_length"] % 64 == 0
    assert 0 <= result.metrics["max_length"] - result.metrics["longest_example"] < 64
