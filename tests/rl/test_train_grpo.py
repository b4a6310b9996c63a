"""train_grpo: TRL GRPOTrainer whose generation replays the real graph, on a tiny model.

The policy is the warmed-up tiny model of ``tests/rl/conftest.py`` (``warm_dir``): some of its
sampled plans parse and some do not, so groups carry a learning signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.rl.conftest import GRPO_POLICY as POLICY
from tests.rl.conftest import GRPO_TASKS as TASKS
from visioncreator.rl.samples import token_sample
from visioncreator.rl.train.config import GRPOStage
from visioncreator.rl.train.grpo import train_grpo
from visioncreator.rl.train.models import load_policy_model

pytest.importorskip("trl")


def test_two_grpo_steps_on_graph_rollouts_change_the_weights(warm_dir: Path, tmp_path: Path) -> None:
    import torch

    # One policy turn per rollout, four per group: some plans parse, some do not (one task: one group a step).
    stage = GRPOStage(
        tasks=TASKS, groups_per_step=1, num_generations=4, max_steps=2, max_turns=1, max_completion_length=256
    )
    logs: list[dict[str, Any]] = []
    result = train_grpo(stage, POLICY, model_dir=warm_dir, output_dir=tmp_path / "grpo", progress=logs.append)

    before, _ = load_policy_model(warm_dir)
    after, _ = load_policy_model(result.model_dir)
    assert not torch.equal(before.get_input_embeddings().weight, after.get_input_embeddings().weight)
    steps = [e for e in logs if "loss" in e]
    assert [e["step"] for e in steps] == [1, 2]
    assert [e["groups/total"] for e in steps] == [1.0, 1.0]
    assert result.metrics["groups"] == 2
    assert result.metrics["degenerate_groups"] == sum(e["groups/degenerate"] for e in steps) < 2
    assert (tmp_path / "grpo" / "checkpoint-2").is_dir()


def test_the_batch_trl_trains_on_holds_the_recorded_ids_with_observations_masked(
    warm_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    stage = GRPOStage(
        tasks=TASKS, groups_per_step=1, num_generations=2, max_steps=1, max_turns=2, max_completion_length=1024
    )
    batches: list[Mapping[str, Any]] = []
    train_grpo(stage, POLICY, model_dir=warm_dir, output_dir=tmp_path / "grpo", on_batch=batches.append)

    tok = AutoTokenizer.from_pretrained(warm_dir)
    [batch] = batches
    prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
    completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
    tool_mask = batch["tool_mask"]
    for i, rollout in enumerate(batch["rollouts"]):
        assert len(rollout.record.turns) == 2
        recorded = token_sample(rollout.record)
        n = len(recorded.completion_ids)
        # The batch TRL trains on holds exactly the recorded ids and masks.
        assert prompt_ids[i][prompt_mask[i].bool()].tolist() == list(recorded.prompt_ids)
        assert completion_ids[i][completion_mask[i].bool()].tolist() == list(recorded.completion_ids)
        assert tool_mask[i][:n].tolist() == list(recorded.env_mask)
        # Policy turns carry loss; the observation between them (feedback, template tokens) does not.
        spans = recorded.spans()
        assert [(s.policy, s.turn) for s in spans] == [(True, 0), (False, -1), (True, 1)]
        for span in spans:
            ids = list(recorded.completion_ids[span.start : span.end])
            if span.policy:
                assert ids == list(rollout.record.turns[span.turn].completion_token_ids or ())
            else:
                assert "<|im_start|>user" in tok.decode(ids)
