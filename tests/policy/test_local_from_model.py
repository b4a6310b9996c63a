"""TransformersPolicy.from_model: a policy over an already loaded model, sampling from its live weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from visioncreator.policy import (
    LocalPolicySettings,
    Message,
    PolicyRequest,
    TransformersPolicy,
    build_tiny_lm,
    corpus_tools,
)
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("torch")
pytest.importorskip("transformers")

SETTINGS = LocalPolicySettings(max_new_tokens=16, seed=0, torch_threads=1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path_factory.mktemp("tiny") / "model")


def _request() -> PolicyRequest:
    messages = (
        Message(role="system", content="You are VisionCreator."),
        Message(role="user", content='a red fox\n<task>{"request": "a red fox"}</task>'),
    )
    return PolicyRequest(messages=messages, node="plan", tools=corpus_tools(POLICY_TOOLS), seed=3)


def _load(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


async def test_a_loaded_model_gives_the_same_turn_as_its_directory(tiny_dir: Path) -> None:
    model, tokenizer = _load(tiny_dir)
    given = TransformersPolicy.from_model(model, tokenizer, settings=SETTINGS)
    with anyio.fail_after(60):
        ours = await given.respond(_request())
        loaded = await TransformersPolicy(tiny_dir, settings=SETTINGS).respond(_request())
    assert ours.prompt_token_ids == loaded.prompt_token_ids
    assert ours.completion_token_ids == loaded.completion_token_ids
    assert ours.logprobs == loaded.logprobs
    assert given.name == f"transformers:{tiny_dir.name}"
    assert ours.model == tiny_dir.name


async def test_it_samples_from_the_live_weights_not_a_copy(tiny_dir: Path) -> None:
    import torch

    model, tokenizer = _load(tiny_dir)
    policy = TransformersPolicy.from_model(model, tokenizer, settings=SETTINGS.model_copy(update={"name": "live"}))
    with anyio.fail_after(60):
        before = await policy.respond(_request())
        with torch.no_grad():  # an optimizer step on the caller's model, in place
            model.get_input_embeddings().weight.mul_(3.0)
        after = await policy.respond(_request())
    assert policy.name == "live"
    assert before.logprobs != after.logprobs


def test_it_refuses_what_is_not_a_model_and_tokenizer(tiny_dir: Path) -> None:
    model, tokenizer = _load(tiny_dir)
    with pytest.raises(TypeError, match="transformers model with generate"):
        TransformersPolicy.from_model(tokenizer, tokenizer)
    with pytest.raises(TypeError, match="tokenizer with apply_chat_template"):
        TransformersPolicy.from_model(model, model)


async def test_a_mixed_precision_model_generates_as_its_weights_in_the_compute_dtype_and_follows_their_changes(
    tiny_dir: Path, tmp_path: Path
) -> None:
    import torch

    model, tokenizer = _load(tiny_dir)  # float32 weights, as a trainer's under mixed precision
    greedy = SETTINGS.model_copy(update={"temperature": 0.0})
    mixed = greedy.model_copy(update={"compute_dtype": "bfloat16"})
    policy = TransformersPolicy.from_model(model, tokenizer, settings=mixed)

    async def in_bfloat16(model_dir: Path) -> Any:
        return await TransformersPolicy(model_dir, settings=greedy.model_copy(update={"dtype": "bfloat16"})).respond(
            _request()
        )

    with anyio.fail_after(120):
        before, reference = await policy.respond(_request()), await in_bfloat16(tiny_dir)
        assert before.completion_token_ids == reference.completion_token_ids
        assert before.logprobs == reference.logprobs
        fp32 = await TransformersPolicy.from_model(model, tokenizer, settings=greedy).respond(_request())
        assert fp32.logprobs != before.logprobs  # it did not generate in float32
        with torch.no_grad():  # an optimizer step on the float32 weights
            model.get_input_embeddings().weight.mul_(3.0)
        after = await policy.respond(_request())
        model.save_pretrained(tmp_path / "stepped")
        tokenizer.save_pretrained(tmp_path / "stepped")
        reference = await in_bfloat16(tmp_path / "stepped")
    assert after.logprobs != before.logprobs
    assert after.completion_token_ids == reference.completion_token_ids
    assert after.logprobs == reference.logprobs
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the caller's model is left as it was
    assert all(p.requires_grad for p in model.parameters())


def test_no_copy_is_made_where_the_weights_are_already_in_the_compute_dtype(tiny_dir: Path) -> None:
    import torch

    from visioncreator.policy.local.shadow import needs_shadow

    model, _ = _load(tiny_dir)
    assert needs_shadow(model, "bfloat16")
    assert not needs_shadow(model, "same")
    assert not needs_shadow(model.to(dtype=torch.bfloat16), "bfloat16")
