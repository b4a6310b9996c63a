"""Exports: SFT conversations and pre-tokenized rows (checked through TRL's SFTTrainer), GRPO datasets."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from tests.graph.conftest import make_client, run
from visioncreator.graph import AgentConfig
from visioncreator.graph.trajectory import Timings, Trajectory, build_trajectory
from visioncreator.policy import Task, build_tiny_lm
from visioncreator.policy.chat_template import END_OF_TURN
from visioncreator.policy.prompting import NODE_INSTRUCTIONS
from visioncreator.rl.exports import ExportError, grpo_dataset, sft_conversation, sft_dataset
from visioncreator.rl.samples import sft_token_sample
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("datasets")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(tiny_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def _expert(store: Path, observe: Literal["inspect", "image"]) -> Trajectory:
    async def go() -> Trajectory:
        async with make_client(store) as tools:
            with anyio.fail_after(60):
                task = Task(request="two dogs, a blue cat", n_images=2, split="multi")
                result = await run(tools, task, config=AgentConfig(observe=observe))
        return build_trajectory(result.state, thread_id="e", wall_s=1.0, config={"observe": observe})

    return anyio.run(go)


@pytest.fixture(scope="module")
def expert(tmp_path_factory: pytest.TempPathFactory) -> Trajectory:
    return _expert(tmp_path_factory.mktemp("expert") / "store", "inspect")


def test_sft_conversation_renders_as_the_policy_prompts(expert: Trajectory, tokenizer: Any) -> None:
    conversation = sft_conversation(expert)
    messages = conversation["messages"]
    assert messages[0]["role"] == "system"
    assert messages[-1]["role"] == "assistant"
    assert {m["role"] for m in messages} == {"system", "user", "assistant", "tool"}
    for before, entry in itertools.pairwise(messages):
        if entry["role"] == "assistant":
            assert before["role"] == "user"
            assert before["content"] in NODE_INSTRUCTIONS.values()
    # TRL renders the conversation with the tokenizer's template: the same text as our sample.
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    sample = sft_token_sample(expert, tokenizer)
    assert rendered == tokenizer.decode(list(sample.input_ids), skip_special_tokens=False)


def test_image_mode_puts_handles_into_the_content(tokenizer: Any, tmp_path: Path) -> None:
    shown = _expert(tmp_path / "store", "image")
    messages = sft_conversation(shown)["messages"]
    last = max(j for j, m in enumerate(shown.messages) if m.role == "assistant")
    wanted = [h for m in shown.messages[: last + 1] for h in m.images]
    assert wanted
    assert [p["image"] for m in messages for p in m["content"] if p["type"] == "image"] == wanted
    tool_parts = [m["content"] for m in messages if m["role"] == "tool"]
    assert any(p["type"] == "image" for parts in tool_parts for p in parts)
    # Our template renders text parts only: the text is unchanged.
    plain = sft_conversation(shown, images=False)["messages"]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(
        plain, tokenize=False
    )


def test_sft_dataset_of_conversations(expert: Trajectory) -> None:
    dataset = sft_dataset([expert, expert])
    assert dataset.column_names == ["messages"]
    assert len(dataset) == 2
    assert dataset[0]["messages"] == sft_conversation(expert)["messages"]
    with pytest.raises(ExportError, match="no trajectories"):
        sft_dataset([])


def test_pre_tokenized_rows_become_trl_labels_on_the_assistant_turns(
    expert: Trajectory, tokenizer: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    dataset = sft_dataset([expert], tokenizer)
    assert dataset.column_names == ["input_ids", "assistant_masks"]
    row = dataset[0]
    assert len(row["input_ids"]) == len(row["assistant_masks"])
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to=[],
        max_length=None,
        max_steps=1,
        activation_checkpointing=False,  # the default (via gradient_checkpointing) is a FutureWarning
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_dir),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    labels = trainer.train_dataset[0]["labels"]
    kept = [t for t in labels if t != -100]
    assistants = [m.content for m in expert.messages if m.role == "assistant"]
    assert tokenizer.decode(kept, skip_special_tokens=False) == "".join(a + END_OF_TURN for a in assistants)


class _Scored(Trajectory):
    group_id: str
    rewards: dict[str, float]


def _scored(thread_id: str, group_id: str, turns: list[dict[str, Any]], rewards: dict[str, float]) -> _Scored:
    return _Scored(
        thread_id=thread_id,
        seed=0,
        task={"request": "a red fox"},
        messages=[],
        turns=turns,
        tool_calls=[],
        answer=[],
        termination="answered",
        timings=Timings(wall_s=0.0, policy_s=0.0, tools_s=0.0),
        group_id=group_id,
        rewards=rewards,
    )


def _turns(first: int) -> list[dict[str, Any]]:
    """A plan turn (two tokens), an observation (two tokens), a reflect turn (one token)."""
    return [
        {"index": 0, "node": "plan", "text": "", "prompt_token_ids": [1, 2], "completion_token_ids": [first, 11],
         "logprobs": [-0.1, -0.2]},
        {"index": 1, "node": "reflect", "text": "", "prompt_token_ids": [1, 2, first, 11, 7, 8],
         "completion_token_ids": [12], "logprobs": [-0.3]},
    ]  # fmt: skip


WEIGHTS = {"plan": 1.0, "reflection": 1.0}
RECORDS = [
    _scored("a0", "g1", _turns(10), {"plan": 1.0, "reflection": 0.0, "total": 0.5}),
    _scored("a1", "g1", _turns(20), {"plan": 0.0, "reflection": 0.5, "total": 0.25}),
    _scored("b0", "g2", _turns(30), {"plan": 0.5, "reflection": 0.5, "total": 0.5}),
    _scored("b1", "g2", _turns(40), {"plan": 0.5, "reflection": 0.5, "total": 0.5}),
]


def test_grpo_dataset_rows_carry_ids_masks_and_per_token_advantages() -> None:
    dataset = grpo_dataset(RECORDS, weights=WEIGHTS)
    assert len(dataset) == 4
    a0, a1, b0, _ = (dataset[i] for i in range(4))
    assert a0["group_id"] == "g1"
    assert a0["trajectory_id"] == "a0"
    assert a0["prompt_ids"] == [1, 2]
    assert a0["completion_ids"] == [10, 11, 7, 8, 12]
    assert a0["env_mask"] == a0["completion_mask"] == [1, 1, 0, 0, 1]
    assert a0["logprobs"] == pytest.approx([-0.1, -0.2, 0.0, 0.0, -0.3])
    assert a0["nodes"] == ["plan", "plan", "", "", "reflect"]
    assert a0["reward"] == pytest.approx(0.5)
    assert a1["reward"] == pytest.approx(0.25)
    assert a0["advantage"] > 0 > a1["advantage"]
    assert a0["advantages"] == pytest.approx([a0["advantage"]] * 2 + [0.0, 0.0, a0["advantage"]])
    assert a0["rewards"] == {"plan": 1.0, "reflection": 0.0, "total": 0.5}
    assert not a0["degenerate"]
    assert b0["degenerate"]
    assert b0["advantages"] == [0.0] * 5


def test_grpo_dataset_with_node_rewards_credits_reflect_tokens_by_reflection() -> None:
    dataset = grpo_dataset(
        {"g1": RECORDS[:2]}, weights=WEIGHTS, node_rewards={"plan": ["plan"], "reflect": ["reflection"]}
    )
    a0, a1 = dataset[0], dataset[1]
    # a0 planned better, a1 reflected better.
    assert a0["advantages"][0] > 0 > a0["advantages"][4]
    assert a1["advantages"][0] < 0 < a1["advantages"][4]
    assert a0["advantages"][2:4] == [0.0, 0.0]


def test_grpo_dataset_takes_explicit_groups_and_reward_functions() -> None:
    plain = [Trajectory.model_validate(r.model_dump(exclude={"group_id", "rewards"})) for r in RECORDS[:2]]
    outcome = {"a0": 1.0, "a1": 0.0}
    dataset = grpo_dataset({"mine": plain}, rewards=lambda t: {"outcome": outcome[t.thread_id]}, weights={"outcome": 1})
    assert dataset["group_id"] == ["mine", "mine"]
    assert dataset[0]["advantage"] > 0 > dataset[1]["advantage"]


def test_grpo_dataset_refuses_what_it_cannot_export(expert: Trajectory) -> None:
    plain = Trajectory.model_validate(RECORDS[0].model_dump(exclude={"group_id", "rewards"}))
    with pytest.raises(ExportError, match="no group_id"):
        grpo_dataset([plain])
    with pytest.raises(ExportError, match="'a0' has no rewards"):
        grpo_dataset({"g": [plain]})
    with pytest.raises(ExportError, match=r"group 'g': turn 0 \(plan\) has no prompt_token_ids"):
        grpo_dataset({"g": [expert]}, rewards=lambda t: {"outcome": 1.0})
    with pytest.raises(ExportError, match=r"group 'g1'.*\['reflection'\] missing"):
        grpo_dataset(RECORDS[:2], weights={"reflection": 1.0}, rewards=lambda t: {"plan": 1.0})
    with pytest.raises(ExportError, match="group 'g' is empty"):
        grpo_dataset({"g": []})
    assert json.dumps(grpo_dataset(RECORDS[:2], weights=WEIGHTS)[0]["rewards"])
