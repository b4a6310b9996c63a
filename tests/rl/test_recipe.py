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
    TrainConfig,
    eval_task_ids,
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
    assert config.stages == rpco_config(config.policy, config.output_dir, eval_tasks=config.eval_tasks).stages
    assert config.stages[0].kind == "grpo"
    assert isinstance(config.stages[0], GRPOStage)
    assert config.stages[0].rewards == REFLECTION_WEIGHTS


@pytest.mark.parametrize("name", ["rpco.toml", "sft-smollm2.toml", "grpo-tiny.toml", "grpo-tiny-vlm.toml"])
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


HELD_OUT = tuple(f"single-{i:03d}" for i in range(12))
"""The first 12 single-image tasks: the held-out tasks of configs/rpco.toml and sft-smollm2.toml."""


@pytest.mark.parametrize("name", ["rpco.toml", "sft-smollm2.toml"])
def test_the_shipped_configs_never_train_on_their_held_out_tasks(name: str) -> None:
    from visioncreator.rl.train.rollout import load_tasks

    config = load_train_config(CONFIGS / name)
    assert config.eval_tasks is not None
    assert eval_task_ids(config.eval_tasks) == HELD_OUT
    for stage in config.stages:
        trained = {t.task_id for t in load_tasks(stage.tasks)}
        assert trained
        assert not trained & set(HELD_OUT), stage.name


def test_the_shipped_configs_set_no_token_limit() -> None:
    for path in sorted(CONFIGS.glob("*.toml")):
        for stage in load_train_config(path).stages:
            limit = stage.max_completion_length if isinstance(stage, GRPOStage) else stage.max_length
            assert limit is None, (path.name, stage.name)  # derived from the data at train time


def test_a_stage_that_names_a_held_out_task_is_refused_with_the_ids(tmp_path: Path) -> None:
    path = tmp_path / "leaky.toml"
    path.write_text(
        _HEAD
        + '[eval_tasks]\nsplits = ["single"]\nlimit = 3\n'
        + '[[stages]]\nkind = "sft"\nname = "warm"\n'
        + '[[stages]]\nkind = "grpo"\nname = "leaky"\ntasks = { ids = ["single-001", "multi-000", "single-002"] }\n'
    )
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "stages.1 ('leaky')" in message
    assert "['single-001', 'single-002']" in message
    assert "multi-000" not in message


def test_every_stage_excludes_the_held_out_tasks() -> None:
    eval_tasks = TaskSource(splits=("multi",), limit=2)
    config = rpco_config("tiny", "out", tasks=TaskSource(exclude_ids=("img2img-000",)), eval_tasks=eval_tasks)
    for stage in config.stages:
        assert stage.tasks.exclude_ids == ("img2img-000", "multi-000", "multi-001")
    # Built directly, too: the rule is the config's, not the recipe's.
    direct = TrainConfig(policy=PolicyModel(model="tiny"), output_dir="o", stages=(SFTStage(),), eval_tasks=eval_tasks)
    assert direct.stages[0].tasks.exclude_ids == ("multi-000", "multi-001")
    without = TrainConfig(policy=PolicyModel(model="tiny"), output_dir="o", stages=(SFTStage(),))
    assert without.stages[0].tasks.exclude_ids == ()


def test_an_unreadable_eval_suite_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_HEAD + f'[eval_tasks]\nsuite = "{tmp_path / "missing.jsonl"}"\n[[stages]]\nkind = "sft"\n')
    with pytest.raises(ConfigError, match=r"c\.toml.*eval_tasks: cannot read suite"):
        load_train_config(path)
