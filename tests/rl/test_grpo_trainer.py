"""GraphGRPOTrainer: per-node advantages in the batch TRL trains on, and the trajectory-image plumbing.

The policy is the warmed-up tiny model of ``tests/rl/conftest.py``: its sampled plans sometimes
parse and sometimes do not, so the plan reward varies within a group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.rl.conftest import GRPO_POLICY, GRPO_TASKS
from tests.rl.tokenized_expert import TokenizedExpert
from visioncreator.policy import ExpertConfig
from visioncreator.policy.types import Task
from visioncreator.rl import CollectTask
from visioncreator.rl.advantages import group_advantages, per_token_advantages, weighted_total
from visioncreator.rl.train.config import GRPOStage, TaskSource
from visioncreator.rl.train.grpo import train_grpo
from visioncreator.rl.train.rollout import GraphRollout, load_tasks, task_prompt
from visioncreator.tool_servers.schemas import TextToImageInput

pytest.importorskip("trl")

# TRL 1.16 reads model.is_gradient_checkpointing, deprecated in transformers 5.24 (a FutureWarning).
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

# Plan (and format, which follows whether the plan parsed) has no weight in the total, so the total
# is equal across the group (TRL alone would give
# every token advantage 0) while the plan reward is not: plan tokens must carry the plan reward's
# advantage, act tokens the total's (0), observations 0.
WEIGHTS = {"outcome": 1.0}
NODE_REWARDS = {"plan": ["plan"]}
SEED = 4  # a run seed whose group of four holds parsed and unparsed plans, each then an act turn


def test_per_node_advantages_reach_the_batch_trl_trains_on(warm_dir: Path, tmp_path: Path) -> None:
    stage = GRPOStage(
        tasks=GRPO_TASKS,
        groups_per_step=1,
        num_generations=4,
        max_steps=1,
        max_turns=2,
        max_completion_length=1024,
        rewards=WEIGHTS,
        per_node_advantages=True,
        node_rewards=NODE_REWARDS,
    )
    batches: list[Mapping[str, Any]] = []
    train_grpo(stage, GRPO_POLICY, model_dir=warm_dir, output_dir=tmp_path, seed=SEED, on_batch=batches.append)

    [batch] = batches
    rollouts = batch["rollouts"]
    advantages = batch["advantages"]
    assert advantages.shape == batch["completion_ids"].shape
    rewards = [dict(r.rewards) for r in rollouts]
    plan = group_advantages([r["plan"] for r in rewards])
    total = group_advantages([weighted_total(r, WEIGHTS) for r in rewards])
    assert not plan.all_equal, f"the group's plan rewards are all equal, the test has no signal: {rewards}"
    assert total.all_equal
    expected = per_token_advantages([r.sample for r in rollouts], rewards, WEIGHTS, NODE_REWARDS)
    seen = set()
    for i, rollout in enumerate(rollouts):
        sample = rollout.sample
        row = advantages[i].tolist()
        n = len(sample.completion_ids)
        assert row[:n] == pytest.approx(expected[i], abs=1e-6)
        assert row[n:] == [0.0] * (len(row) - n)  # padding
        for value, node, mask in zip(row, sample.nodes, sample.env_mask, strict=False):
            want = 0.0 if not mask else plan.values[i] if node == "plan" else total.values[i]
            assert value == pytest.approx(want, abs=1e-6), (i, node, mask)
            seen.add(node if mask else "env")
    assert {"plan", "act", "env"} <= seen


# ---- trajectory images --------------------------------------------------------------------

IMG2IMG = CollectTask(
    task=Task(request="put the red cat beside the two blue dogs", split="img2img", id="cat-and-dogs"),
    inputs=(
        TextToImageInput(prompt="a red cat", width=64, height=64, seed=1),
        TextToImageInput(prompt="two blue dogs", width=96, height=64, seed=2),
    ),
)
"""Two different input images, rendered into the rollout's store before the run."""


def _trainer(model_dir: Path, out: Path, rollout: GraphRollout, task: CollectTask, **credit: Any) -> Any:
    from datasets import Dataset  # type: ignore[import-untyped,unused-ignore]
    from trl.trainer.grpo_config import GRPOConfig

    from visioncreator.rl.train.models import load_policy_model
    from visioncreator.rl.train.rollout import reward_functions
    from visioncreator.rl.train.trainer import GraphGRPOTrainer

    model, tokenizer = load_policy_model(model_dir, torch_threads=1)
    funcs, weights = reward_functions(rollout.stage.rewards)
    args = GRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        activation_checkpointing=False,  # the default (via gradient_checkpointing) is a FutureWarning
        disable_tqdm=True,
        per_device_train_batch_size=2,
        num_generations=2,
        max_steps=1,
        max_completion_length=rollout.stage.max_completion_length,
        reward_weights=weights,
    )
    dataset = Dataset.from_list([{"prompt": task_prompt(task)}])
    return GraphGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout=rollout,
        **credit,
    )


# A rollout that does show images needs a VLM policy over a VLM model: tests/rl/test_vlm_graph_train.py
# checks its images, read back from the store, reach every forward pass.
@pytest.mark.parametrize(("observe", "with_processor"), [("inspect", True), ("image", False)])
def test_a_rollout_returns_no_images_unless_its_policy_sees_them(
    warm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, observe: Any, with_processor: bool
) -> None:
    from visioncreator.rl.train.tiny_vlm import build_tiny_vlm

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    stage = GRPOStage(tasks=TaskSource(fault_rate=0.0), num_generations=2, max_turns=1, max_completion_length=512)
    processor = build_tiny_vlm(seed=0).processor if with_processor else None
    store = tmp_path / "store"
    rollout = GraphRollout(stage=stage, policy=GRPO_POLICY, store=store, observe=observe, processor=processor)
    trainer = _trainer(warm_dir, tmp_path / "out", rollout, IMG2IMG)
    out = rollout([task_prompt(IMG2IMG)] * 2, trainer)

    assert rollout.shows_images is False
    assert "trajectory_images" not in out
    assert len(out["completion_ids"]) == 2


# ---- credit per image call and per reflect turn ----------------------------------------------


CREDIT_SEED = 6
"""A run seed whose group of two differs in total reward and in image quality, and holds redo calls
in reflect turns and a trajectory whose reflect turns judged right and wrong."""
LOCAL = 0.25


def _values(batch: Mapping[str, Any]) -> list[dict[str, set[float]]]:
    """For each sample: segment label (``""``: environment) -> the advantages its tokens carry in the batch."""
    out = []
    for i, rollout in enumerate(batch["rollouts"]):
        sample = rollout.sample
        row = batch["advantages"][i].tolist()
        labels: dict[str, set[float]] = {}
        for owner, value in zip(sample.segments, row, strict=False):
            labels.setdefault(owner, set()).add(round(value, 6))
        out.append(labels)
    return out


def test_per_turn_credit_reaches_the_batch_trl_trains_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from visioncreator.rl.credit import credited_advantages, image_call_qualities, with_segments
    from visioncreator.rl.train.models import load_policy_model, model_dir_for

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    stage = GRPOStage(
        tasks=TaskSource(splits=("single",), limit=1, fault_rate=0.6),
        num_generations=2,
        max_turns=8,
        max_completion_length=4096,
        rewards=WEIGHTS,
    )
    expert = ExpertConfig(accept_faulty_rate=0.5, over_reflect_rate=0.3)
    rollout = GraphRollout(
        stage=stage, policy=GRPO_POLICY, store=tmp_path / "store", seed=CREDIT_SEED,
        policy_factory=lambda model, tokenizer: TokenizedExpert(expert, tokenizer),
    )  # fmt: skip
    model_dir = model_dir_for(GRPO_POLICY, tmp_path / "models")
    batches: list[Mapping[str, Any]] = []
    trainer = _trainer(
        model_dir,
        tmp_path / "out",
        rollout,
        load_tasks(stage.tasks)[0],
        credit="per_turn",
        credit_local_weight=LOCAL,
        on_batch=batches.append,
    )
    trainer.train()
    [batch] = batches
    rollouts = batch["rollouts"]
    advantages = batch["advantages"]
    assert advantages.shape == batch["completion_ids"].shape
    _, tokenizer = load_policy_model(model_dir)
    samples = [with_segments(r.sample, r.record, tokenizer) for r in rollouts]
    batch = {**batch, "rollouts": [dataclasses.replace(r, sample=s) for r, s in zip(rollouts, samples, strict=True)]}
    values = _values(batch)
    rewards = [dict(r.rewards) for r in rollouts]
    total = group_advantages([weighted_total(r, WEIGHTS) for r in rewards]).values
    qualities = [image_call_qualities(r.record) for r in rollouts]
    calls = group_advantages([q for per in qualities for q in per.values()]).values
    assert len(set(calls)) > 1, f"the group's images are all as good: the test has no signal: {qualities}"
    want_calls = iter(calls)
    redo_differs = turns_differ = False
    for i, rollout in enumerate(rollouts):
        assert values[i].get("", {0.0}) == {0.0}  # environment tokens
        reflect_turns = {t.index for t in rollout.record.turns if t.node == "reflect"}
        for label in qualities[i]:
            # Every image call's tokens carry its own image's credit, wherever it was written.
            want = LOCAL * next(want_calls) + (1 - LOCAL) * total[i]
            [value] = values[i][label]
            assert value == pytest.approx(want, abs=1e-5), label
            turn = int(label.split(":")[0][1:])
            if turn in reflect_turns:
                redo_differs |= values[i][label] != values[i][f"t{turn}:reflect:0"]
        reflect_values = [values[i][f"t{t}:reflect:0"] for t in sorted(reflect_turns)]
        turns_differ |= len({frozenset(v) for v in reflect_values}) > 1
    assert redo_differs, "a redo call in a reflect turn carries the call's credit, not the reflection's"
    assert turns_differ, "the reflect turns of one trajectory carry their own advantages"
    expected = credited_advantages(samples, [r.record for r in rollouts], rewards, WEIGHTS, local_weight=LOCAL)
    for i, row in enumerate(expected):
        assert advantages[i, : len(row)].tolist() == pytest.approx(row, abs=1e-5)


# ---- branched groups ------------------------------------------------------------------------


def test_a_branched_group_trains_on_continuations_from_identical_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visioncreator.rl.train.models import model_dir_for

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    stage = GRPOStage(
        tasks=TaskSource(splits=("single",), limit=1, fault_rate=1.0),
        num_generations=2,
        max_turns=10,
        max_completion_length=4096,
        rewards=WEIGHTS,
    )
    expert = ExpertConfig(accept_faulty_rate=0.5, over_reflect_rate=0.5)
    rollout = GraphRollout(
        stage=stage, policy=GRPO_POLICY, store=tmp_path / "store", seed=1, branch_at="reflect",
        policy_factory=lambda model, tokenizer: TokenizedExpert(expert, tokenizer),
    )  # fmt: skip
    model_dir = model_dir_for(GRPO_POLICY, tmp_path / "models")
    batches: list[Mapping[str, Any]] = []
    trainer = _trainer(model_dir, tmp_path / "out", rollout, load_tasks(stage.tasks)[0], on_batch=batches.append)
    trainer.train()
    [batch] = batches
    rollouts = batch["rollouts"]
    branches = {r.record.branch.model_dump_json() if r.record.branch else None for r in rollouts}
    assert len(branches) == 1
    assert None not in branches
    for r in rollouts:
        assert r.record.branch is not None
        first = r.record.turns[r.record.branch.turn]
        assert first.node == "reflect"
        # The sample is the continuation alone: its prompt is what the branch turn saw.
        assert r.sample.prompt_ids == first.prompt_token_ids
        assert min(t for t in r.sample.turns if t >= 0) == r.record.branch.turn
    # Every continuation starts from the identical tokens, in the batch TRL trains on too.
    prompts = [row[mask.bool()].tolist() for row, mask in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)]
    assert prompts[0] == prompts[1] == list(rollouts[0].sample.prompt_ids)


def test_a_rollout_over_the_completion_limit_is_refused_not_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visioncreator.rl.train.models import model_dir_for

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    stage = GRPOStage(
        tasks=TaskSource(splits=("single",), limit=1, fault_rate=0.0),
        num_generations=2,
        max_turns=8,
        max_completion_length=64,  # far below any expert trajectory
        rewards=WEIGHTS,
    )
    rollout = GraphRollout(
        stage=stage, policy=GRPO_POLICY, store=tmp_path / "store", seed=0,
        policy_factory=lambda model, tokenizer: TokenizedExpert(ExpertConfig(), tokenizer),
    )  # fmt: skip
    model_dir = model_dir_for(GRPO_POLICY, tmp_path / "models")
    batches: list[Mapping[str, Any]] = []
    trainer = _trainer(model_dir, tmp_path / "out", rollout, load_tasks(stage.tasks)[0], on_batch=batches.append)
    trainer.train()
    [batch] = batches
    assert rollout.refused_too_long == 2
    for r in batch["rollouts"]:
        assert len(r.sample.completion_ids) == 64
        assert r.sample.policy_tokens == 0  # no token of a refused rollout carries loss
    assert batch["tool_mask"].sum().item() == 0
    logged = [e for e in trainer.state.log_history if "rollouts/refused_too_long" in e]
    assert logged
    assert logged[0]["rollouts/refused_too_long"] == 2.0
