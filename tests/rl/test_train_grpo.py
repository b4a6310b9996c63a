"""train_grpo: TRL GRPOTrainer whose generation replays the real graph, on a tiny model.

A random model writes nothing parseable, so every reward is equal within a group and GRPO has no
signal (zero advantages, unchanged weights). The fixture first teaches the tiny model, in a few
seconds, to open its plan turn with a short plan (a warm-up on that one turn, given the real
prompt); sampled at temperature 1, some rollouts then parse and some do not.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from visioncreator.rl.config import GRPOStage, PolicyModel, TaskSource
from visioncreator.rl.models import load_policy_model, model_dir_for, save_policy_model
from visioncreator.rl.rollout import load_tasks
from visioncreator.rl.samples import token_sample
from visioncreator.rl.trainers import train_grpo

pytest.importorskip("trl")

TASKS = TaskSource(splits=("single",), limit=1, fault_rate=0.0)
POLICY = PolicyModel(model="tiny", torch_threads=1, max_new_tokens=48, temperature=1.0)
PLAN = '<plan>[{"step":1,"goal":"x","tool":"text_to_image"}]</plan><|im_end|>'


async def _expert_prompt(store: Path, tokenizer: Any) -> list[int]:
    from visioncreator.graph.offline import expert_policy
    from visioncreator.rl.collector import CollectConfig, collect, synthetic_tools
    from visioncreator.rl.samples import sft_token_sample

    config = CollectConfig(group_size=1, store=store, fault_rate=0.0)
    async with synthetic_tools(config) as tools:
        [record] = await collect(load_tasks(TASKS), policy=expert_policy(), tools=tools, config=config)
    return list(sft_token_sample(record, tokenizer).prompt_ids)


@pytest.fixture(scope="module")
def warm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a short warm-up on a plan turn, given the real plan prompt."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("grpo-models")
    model, tok = load_policy_model(model_dir_for(POLICY, root))
    prompt = asyncio.run(_expert_prompt(root / "store", tok))
    target = tok(PLAN, add_special_tokens=False)["input_ids"]
    inputs = torch.tensor([prompt[-1:] + target])
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(target))[None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(100):
        if step % 10 == 0:  # the prompt's keys and values, refreshed as the weights move
            with torch.no_grad():
                cache = model(input_ids=torch.tensor([prompt[:-1]]), use_cache=True).cache
        logits = model(input_ids=inputs, cache=copy.deepcopy(cache), position_ids=positions).logits
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], torch.tensor(target))
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad()
    return save_policy_model(model, tok, root / "warm")


def test_two_grpo_steps_on_graph_rollouts_change_the_weights(warm_dir: Path, tmp_path: Path) -> None:
    import torch

    # One policy turn per rollout, four per group: some plans parse, some do not.
    stage = GRPOStage(tasks=TASKS, num_generations=4, max_steps=2, max_turns=1, max_completion_length=256)
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

    stage = GRPOStage(tasks=TASKS, num_generations=2, max_steps=1, max_turns=2, max_completion_length=1024)
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
                assert ids == rollout.record.turns[span.turn]["completion_token_ids"]
            else:
                assert "<|im_start|>user" in tok.decode(ids)
