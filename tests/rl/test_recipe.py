"""The RPCO recipe as configuration, the example configs, and how config files are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from visioncreator.rl.train.config import (
    DEFAULT_WEIGHTS,
    ConfigError,
    GRPOStage,
    PolicyModel,
    SFTStage,
    TaskSource,
    load_train_config,
)
from visioncreator.rl.train.recipe import REFLECTION_WEIGHTS, RPCO_STAGE_NAMES, rpco_config, rpco_stages
from visioncreator.rl.train.stages import stage_dir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_rpco_stages_are_the_papers_order() -> None:
    config = rpco_config("tiny", "runs/x")
    reflect, sft, multi = config.stages
    assert [s.kind for s in config.stages] == ["grpo", "sft", "grpo"]
    assert [s.name for s in config.stages] == list(RPCO_STAGE_NAMES)
    # Stage 1: RL on single images, the reflection reward weighs most.
    assert isinstance(reflect, GRPOStage)
    assert reflect.tasks.splits == ("single",)
    assert max(reflect.rewards, key=reflect.rewards.__getitem__) == "reflection"
    assert reflect.per_node_advantages
    # Stage 2: SFT on reflection-strong single-image and planning-strong multi-image trajectories.
    assert isinstance(sft, SFTStage)
    assert set(sft.tasks.splits) == {"single", "multi"}
    assert [(s.splits, s.min_rewards) for s in sft.select] == [
        (("single",), {"reflection": 1.0}),
        (("multi",), {"plan": 1.0}),
    ]
    assert all(s.require_success for s in sft.select)
    # Stage 3: multi-task RL, every split, every reward at its default weight.
    assert isinstance(multi, GRPOStage)
    assert set(multi.tasks.splits) == {"single", "multi", "img2img"}
    assert multi.rewards == DEFAULT_WEIGHTS


def test_rpco_config_keeps_the_callers_policy_tasks_and_sizes() -> None:
    policy = PolicyModel(model="smollm2", max_new_tokens=64)
    tasks = TaskSource(suite="my-suite.jsonl", exclude_ids=("single-000",), fault_rate=0.1)
    config = rpco_config(
        policy, "out", tasks=tasks, eval_tasks=TaskSource(ids=("single-000",)), grpo_steps=3, sft_steps=5,
        num_generations=2,
    )  # fmt: skip
    assert config.policy == policy
    assert config.eval_tasks is not None
    assert config.eval_tasks.ids == ("single-000",)
    for stage in config.stages:
        assert stage.tasks.suite == "my-suite.jsonl"
        assert stage.tasks.exclude_ids == ("single-000",)
        assert stage.max_steps == (5 if stage.kind == "sft" else 3)
        if isinstance(stage, GRPOStage):
            assert stage.num_generations == 2


def test_configs_rpco_toml_is_the_recipe() -> None:
    config = load_train_config(CONFIGS / "rpco.toml")
    assert config.stages == rpco_config(config.policy, config.output_dir).stages
    assert config.stages[0].kind == "grpo"
    assert isinstance(config.stages[0], GRPOStage)
    assert config.stages[0].rewards == REFLECTION_WEIGHTS


@pytest.mark.parametrize("name", ["rpco.toml", "sft-smollm2.toml", "grpo-tiny.toml"])
def test_every_example_config_validates(name: str) -> None:
    config = load_train_config(CONFIGS / name)
    assert config.stages


def test_a_file_without_stages_gets_the_default_stages_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "only-policy.toml"
    path.write_text('output_dir = "runs/r"\n[policy]\nmodel = "tiny"\n')
    with pytest.raises(ConfigError, match=r"only-policy\.toml.*stages"):
        load_train_config(path)
    config = load_train_config(path, default_stages=rpco_stages())
    assert config.stages == rpco_stages()


_HEAD = 'output_dir = "o"\n[policy]\nmodel = "tiny"\n'


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (_HEAD + '[[stages]]\nkind = "sft"\nmax_steps = 0\n', "stages.0.sft.max_steps"),
        (_HEAD + 'max_new_tokens = -1\n[[stages]]\nkind = "sft"\n', "policy.max_new_tokens"),
        (_HEAD + '[[stages]]\nkind = "ppo"\n', "stages.0"),
        (_HEAD + '[[stages]]\nkind = "grpo"\nrewards = { style = 1.0 }\n', "stages.0.grpo"),
    ],
)
def test_an_invalid_config_names_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert str(path) in str(info.value)
    assert field in str(info.value)


def test_stage_directories_are_numbered_and_path_safe(tmp_path: Path) -> None:
    assert stage_dir(tmp_path, 1, SFTStage(name="sft")) == tmp_path / "01-sft"
    assert stage_dir(tmp_path, 12, GRPOStage(name="../multi task")) == tmp_path / "12-multi-task"
