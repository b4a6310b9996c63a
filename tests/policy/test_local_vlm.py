"""TransformersVLMPolicy on the tiny random Idefics3: images expanded in the prompt, ids chained turn to turn."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import pytest

from visioncreator.policy import LocalPolicySettings, Message, PolicyRequest, TransformersVLMPolicy, build_tiny_lm
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image

SETTINGS = LocalPolicySettings(max_new_tokens=12, seed=0, torch_threads=1)


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(out, format="PNG")
    return out.getvalue()


class _Images:
    """An in-memory image source: handle -> PNG bytes."""

    def __init__(self) -> None:
        self.data = {"img_red": _png((220, 30, 30)), "img_blue": _png((20, 40, 230)), "img_bad": b"not an image"}

    async def read(self, handle: str) -> bytes:
        return self.data[handle]


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from visioncreator.rl.train.tiny_vlm import write_tiny_vlm

    root = tmp_path_factory.mktemp("tiny-vlm")
    return write_tiny_vlm(root / "vlm", build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=root / "lm"))


@pytest.fixture(scope="module")
def policy(vlm_dir: Path) -> TransformersVLMPolicy:
    return TransformersVLMPolicy.load(vlm_dir, images=_Images(), settings=SETTINGS)


def _opening(content: str = "a red fox") -> tuple[Message, ...]:
    return (Message(role="system", content="You are VisionCreator."), Message(role="user", content=content))


def _image_tokens(policy: TransformersVLMPolicy, ids: tuple[int, ...] | list[int] | None) -> int:
    tok = policy.processor.tokenizer
    return list(ids or ()).count(tok.convert_tokens_to_ids(policy.processor.image_token))


async def test_turns_chain_with_every_observed_image_expanded(policy: TransformersVLMPolicy) -> None:
    seq_len = policy.processor.image_seq_len
    with anyio.fail_after(60):
        first = await policy.respond(PolicyRequest(messages=_opening(), node="plan", seed=1))
        observed = (
            *_opening(),
            Message(role="assistant", content=first.text, node="plan"),
            Message(role="tool", content="<observation>two images</observation>", images=("img_red", "img_blue")),
        )
        request = PolicyRequest(messages=observed, node="reflect", seed=1)
        second = await policy.respond(request)
        ids = await policy.prompt_ids(request)
    assert _image_tokens(policy, first.prompt_token_ids) == 0
    head = (*(first.prompt_token_ids or ()), *(first.completion_token_ids or ()))
    assert second.prompt_token_ids is not None
    assert second.prompt_token_ids[: len(head)] == head
    assert _image_tokens(policy, second.prompt_token_ids) == 2 * seq_len
    assert tuple(ids) == second.prompt_token_ids
    assert second.logprobs is not None
    assert len(second.logprobs) == len(second.completion_token_ids or ())


async def test_the_images_reach_the_model(policy: TransformersVLMPolicy) -> None:
    greedy = TransformersVLMPolicy(
        policy.model, policy.processor, images=_Images(), settings=SETTINGS.model_copy(update={"temperature": 0})
    )
    turns = []
    with anyio.fail_after(60):
        for handle in ("img_red", "img_blue"):
            messages = (*_opening(), Message(role="tool", content="<observation/>", images=(handle,)))
            turns.append(await greedy.respond(PolicyRequest(messages=messages, node="reflect")))
    red, blue = turns
    assert red.prompt_token_ids == blue.prompt_token_ids
    assert red.logprobs != blue.logprobs  # same ids, different pixels


async def test_a_placeholder_written_in_a_message_is_not_an_image(policy: TransformersVLMPolicy) -> None:
    written = _opening(f"draw {policy.processor.image_token} here")
    with anyio.fail_after(60):
        none = await policy.prompt_ids(PolicyRequest(messages=written, node="plan"))
        shown = (*written[:1], written[1].model_copy(update={"images": ("img_red",)}))
        one = await policy.prompt_ids(PolicyRequest(messages=shown, node="plan"))
    assert _image_tokens(policy, none) == 0
    assert _image_tokens(policy, one) == policy.processor.image_seq_len


async def test_bytes_that_are_not_an_image_are_refused(policy: TransformersVLMPolicy) -> None:
    messages = (*_opening(), Message(role="tool", content="<observation/>", images=("img_bad",)))
    with anyio.fail_after(60), pytest.raises(ValueError, match="not a PNG, JPEG or WebP image"):
        await policy.respond(PolicyRequest(messages=messages, node="reflect"))


def test_it_refuses_a_processor_without_images(vlm_dir: Path) -> None:
    from transformers import AutoTokenizer

    class _Model:
        def generate(self) -> None: ...

    with pytest.raises(TypeError, match="model with generate"):
        TransformersVLMPolicy(object(), AutoTokenizer.from_pretrained(vlm_dir), images=_Images())
    with pytest.raises(TypeError, match="processor with image_token"):
        TransformersVLMPolicy(_Model(), AutoTokenizer.from_pretrained(vlm_dir), images=_Images())


async def test_n_samples_share_the_prompt_and_its_images(policy: TransformersVLMPolicy) -> None:
    messages = (*_opening(), Message(role="tool", content="<observation/>", images=("img_red",)))
    with anyio.fail_after(60):
        turns = await policy.sample(PolicyRequest(messages=messages, node="reflect", seed=2), 3)
        [alone] = await policy.sample(PolicyRequest(messages=messages, node="reflect", seed=2), 1)
    assert len(turns) == 3
    assert {t.prompt_token_ids for t in turns} == {alone.prompt_token_ids}
    assert _image_tokens(policy, alone.prompt_token_ids) == policy.processor.image_seq_len
    assert all(len(t.logprobs or ()) == len(t.completion_token_ids or ()) > 0 for t in turns)
