"""build_scratch_model: a random model whose tokenizer is trained on expert trajectories of the real graph."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from visioncreator.rl import TrajectoryRecord
from visioncreator.rl.train import (
    SIZES,
    PolicyModel,
    ScratchSize,
    SFTStage,
    TaskSource,
    build_scratch_model,
    conversation_texts,
    parameter_count,
    train_sft,
)

pytest.importorskip("trl")

TASKS = TaskSource(splits=("single",), limit=4, fault_rate=0.5)


@pytest.fixture(scope="module")
def expert(tmp_path_factory: pytest.TempPathFactory) -> list[TrajectoryRecord]:
    """Expert trajectories of four single-image tasks through the real graph and synthetic tools (faults on)."""
    from visioncreator.graph import expert_policy
    from visioncreator.rl import CollectConfig, collect
    from visioncreator.rl.collection import synthetic_tools
    from visioncreator.rl.train import load_tasks

    config = CollectConfig(group_size=1, store=tmp_path_factory.mktemp("store"), fault_rate=TASKS.fault_rate)

    async def run() -> list[TrajectoryRecord]:
        async with synthetic_tools(config) as tools:
            return await collect(load_tasks(TASKS), policy=expert_policy(), tools=tools, config=config)

    return asyncio.run(run())


@pytest.fixture(scope="module")
def tiny(expert: list[TrajectoryRecord], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scratch_model(tmp_path_factory.mktemp("scratch"), texts=conversation_texts(expert), size="tiny")


def _tokens(model_dir: Path, texts: list[str]) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def test_the_model_loads_with_the_named_size_and_its_record(tiny: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny)
    size = SIZES["tiny"]
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (size.hidden, size.layers)
    info = json.loads((tiny / "scratch.json").read_text())
    assert info["hidden"] == size.hidden
    assert info["corpus_documents"] > 0
    assert info["parameters"] == parameter_count(tiny) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size)


def test_the_tokenizer_trained_on_the_trajectories_makes_them_short(
    expert: list[TrajectoryRecord], tiny: Path, tmp_path: Path
) -> None:
    texts = list(conversation_texts(expert))
    assert any("<reflect>" in t for t in texts)
    assert any("<tool_call>" in t for t in texts)
    other = build_scratch_model(tmp_path / "other", texts=["a red fox on a bench"], size="tiny")
    assert _tokens(tiny, texts) < 0.7 * _tokens(other, texts)


def test_the_same_inputs_give_the_same_files(expert: list[TrajectoryRecord], tiny: Path, tmp_path: Path) -> None:
    again = build_scratch_model(tmp_path / "again", texts=conversation_texts(expert), size="tiny")
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (tiny / name).read_bytes()


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scratch model size 'huge'"):
        build_scratch_model(tmp_path / "a", texts=["x"], size="huge")
    with pytest.raises(ValueError, match="texts is empty"):
        build_scratch_model(tmp_path / "b", texts=[], size="tiny")
    with pytest.raises(ValueError, match="head size of at least 32"):
        build_scratch_model(tmp_path / "c", texts=["x y"], size=ScratchSize(hidden=64, layers=1, heads=4))


def test_sft_from_scratch_learns_the_expert_trajectories(
    expert: list[TrajectoryRecord], tiny: Path, tmp_path: Path
) -> None:
    """The built model is a valid start for train_sft: the loss on the expert's turns falls."""
    stage = SFTStage(max_steps=16, learning_rate=1e-2, batch_size=2, save_steps=100)
    policy = PolicyModel(model=str(tiny), torch_threads=1)
    result = train_sft(stage, policy, output_dir=tmp_path / "sft", records=expert)
    losses = [e["loss"] for e in result.log_history if "loss" in e]
    assert len(losses) == 16
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
