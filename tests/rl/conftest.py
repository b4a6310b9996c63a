"""Shared GRPO set-up: a tiny policy warmed up to open its plan turn with a short plan.

A random model writes nothing parseable, so every reward is equal within a group and GRPO has no
signal (zero advantages, unchanged weights). :func:`warm_dir` first teaches the tiny model, in a
few seconds, to open its plan turn with a short plan (a warm-up on that one turn, given the real
prompt); sampled at temperature 1, some rollouts then parse and some do not.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from visioncreator.rl.train.config import PolicyModel, TaskSource
from visioncreator.rl.train.rollout import load_tasks

GRPO_TASKS = TaskSource(splits=("single",), limit=1, fault_rate=0.0)
"""One single-image task, faults off."""
GRPO_POLICY = PolicyModel(model="tiny", torch_threads=1, max_new_tokens=48, temperature=1.0)
"""The tiny model, sampled at temperature 1, short turns."""
PLAN = '<plan>[{"step":1,"goal":"x","tool":"text_to_image"}]</plan><|im_end|>'


async def _expert_prompt(store: Path, tokenizer: Any) -> list[int]:
    from visioncreator.graph.offline import expert_policy
    from visioncreator.rl import CollectConfig, collect
    from visioncreator.rl.collection.collector import synthetic_tools
    from visioncreator.rl.samples import sft_token_sample

    config = CollectConfig(group_size=1, store=store, fault_rate=0.0)
    async with synthetic_tools(config) as tools:
        [record] = await collect(load_tasks(GRPO_TASKS), policy=expert_policy(), tools=tools, config=config)
    return list(sft_token_sample(record, tokenizer).prompt_ids)


@pytest.fixture(scope="session")
def warm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a short warm-up on a plan turn, given the real plan prompt."""
    pytest.importorskip("trl")
    import torch

    from visioncreator.rl.train.models import load_policy_model, model_dir_for, save_policy_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("grpo-models")
    model, tok = load_policy_model(model_dir_for(GRPO_POLICY, root))
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
    torch.set_num_threads(threads)
    return save_policy_model(model, tok, root / "warm")
