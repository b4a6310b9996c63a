"""Mid-trajectory images reach GRPO's forward passes (tiny random Idefics3, TRL's own loss path)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

import torch
from PIL import Image

from visioncreator.rl.train.tiny_vlm import TinyVLM, build_tiny_vlm
from visioncreator.rl.train.vlm import (
    TRAJECTORY_IMAGES,
    TrajectoryImagesError,
    TrajectoryImagesGRPOTrainer,
)

# TRL 1.16 reads model.is_gradient_checkpointing, deprecated in transformers 5.24 (a FutureWarning).
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

RED = Image.new("RGB", (40, 40), (220, 30, 30))
BLUE = Image.new("RGB", (48, 36), (20, 40, 230))
PROMPT = [{"role": "user", "content": "draw a red cat"}]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyVLM, Path]:
    tiny = build_tiny_vlm(seed=0)
    model_dir = tmp_path_factory.mktemp("tiny-vlm")
    tiny.model.save_pretrained(model_dir)  # TRL builds the reference model from a path
    return tiny, model_dir


def _ids(processor: Any, text: str, images: list[Image.Image] | None = None) -> list[int]:
    if images:
        ids: list[int] = processor(text=[text], images=[images], add_special_tokens=False)["input_ids"][0]
        return ids
    return list(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def _trajectory(processor: Any, images: list[Image.Image]) -> tuple[list[int], list[int], list[int]]:
    """A two-turn completion; the tool's observation in between shows ``images`` (no loss on it)."""
    prompt = _ids(processor, "user : draw a red cat . assistant :")
    turn1 = _ids(processor, "think draw a cat tool_call text_to_image")
    observation = _ids(processor, "tool : image img_a " + "<image> " * len(images), images)
    turn2 = _ids(processor, "reflect verdict accept answer img_a <eos>")
    return prompt, turn1 + observation + turn2, [1] * len(turn1) + [0] * len(observation) + [1] * len(turn2)


def _rollout(processor: Any, per_sample: list[list[Image.Image]]) -> Callable[[list[Any], Any], dict[str, Any]]:
    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        assert len(prompts) == len(per_sample)
        samples = [_trajectory(processor, images) for images in per_sample]
        return {
            "prompt_ids": [s[0] for s in samples],
            "completion_ids": [s[1] for s in samples],
            "logprobs": None,
            "env_mask": [s[2] for s in samples],
            TRAJECTORY_IMAGES: per_sample,
            "score": [float(i % 2) for i in range(len(samples))],
        }

    return rollout_func


def _score(completions: list[Any], score: list[float], **_: Any) -> list[float]:
    return score


def _trainer(
    cls: type[Any], vlm: tuple[TinyVLM, Path], out: Path, per_sample: list[list[Image.Image]], **config: Any
) -> Any:
    from datasets import Dataset
    from trl.trainer.grpo_config import GRPOConfig

    tiny, model_dir = vlm
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
        logging_steps=1,
        **config,
    )
    return cls(
        model=str(model_dir),
        reward_funcs=_score,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [PROMPT] * 2}),
        processing_class=tiny.processor,
        rollout_func=_rollout(tiny.processor, per_sample),
    )


def _scored_loss(trainer: Any, per_sample: list[list[Image.Image]], processor: Any) -> dict[str, torch.Tensor]:
    """Score one batch whose tool observation shows ``per_sample`` images, and take TRL's loss on it."""
    trainer.rollout_func = _rollout(processor, per_sample)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before compute_loss
    batch = trainer._generate_and_score_completions([{"prompt": PROMPT}, {"prompt": PROMPT}])
    loss = trainer.compute_loss(trainer.model, batch)
    return {"old": batch["old_per_token_logps"], "ref": batch["ref_per_token_logps"], "loss": loss.detach()}


@pytest.mark.parametrize("subclass", [True, False], ids=["trajectory-images", "stock-trl"])
def test_a_mid_trajectory_image_changes_the_loss_only_with_the_subclass(
    vlm: tuple[TinyVLM, Path], tmp_path: Path, subclass: bool
) -> None:
    from trl.trainer.grpo_trainer import GRPOTrainer

    cls = TrajectoryImagesGRPOTrainer if subclass else GRPOTrainer
    # num_iterations=2 makes TRL compute old log-probs at scoring time; beta>0 the reference ones.
    trainer = _trainer(cls, vlm, tmp_path, [[RED], [RED]], beta=0.5, num_iterations=2)
    with torch.no_grad():  # move the policy off the reference, so that the KL term depends on the logps
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    processor = vlm[0].processor
    red = _scored_loss(trainer, [[RED], [RED]], processor)
    blue = _scored_loss(trainer, [[BLUE], [BLUE]], processor)
    for key in ("old", "ref", "loss"):
        same = torch.equal(red[key], blue[key])
        assert same is not subclass, f"{key}: the mid-trajectory image {'did not reach' if same else 'reached'} it"
    assert torch.isfinite(red["loss"])


def test_uneven_image_counts_stay_with_their_samples(vlm: tuple[TinyVLM, Path], tmp_path: Path) -> None:
    tiny = vlm[0]
    trainer = _trainer(TrajectoryImagesGRPOTrainer, vlm, tmp_path, [[RED, BLUE], []])
    trainer.model.eval()
    batch = trainer._generate_and_score_completions([{"prompt": PROMPT}, {"prompt": PROMPT}])
    assert "num_images" not in batch
    assert batch["pixel_values"].shape[:2] == (2, 2)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    keep = batch["completion_ids"].size(1)
    pixels = {"pixel_values": batch["pixel_values"], "pixel_attention_mask": batch["pixel_attention_mask"]}
    with torch.no_grad():
        whole, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep, 2, **pixels)
        chunked, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep, 1, **pixels)
        # Sample 0 on its own, straight through the model: the reference for both.
        alone = trainer.model(
            input_ids=ids[:1], attention_mask=mask[:1], **{k: v[:1] for k, v in pixels.items()}
        ).logits[0, -keep - 1 : -1]
    expected = torch.log_softmax(alone.float(), -1).gather(-1, ids[0, -keep:, None])[:, 0]
    n = int(batch["completion_mask"][0].sum())
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(chunked[0, :n], expected[:n], rtol=1e-4, atol=1e-4)
    assert tiny.processor.image_seq_len > 0


@pytest.mark.parametrize(
    ("shown", "returned", "message"),
    [
        ([[RED], [RED]], [[RED, BLUE], [RED]], r"sample 0: 4 image placeholder tokens .* give 2 image tiles"),
        ([[RED], []], [[RED], [BLUE]], r"sample 1: 0 image placeholder tokens"),
        ([[RED], [RED]], [[RED]], r"one entry per sample \(2\), got 1"),
        ([[RED], [RED]], [[RED], ["img_a"]], r"\[1\] must be None or a list of PIL images"),
    ],
)
def test_images_that_do_not_match_the_placeholders_are_refused(
    vlm: tuple[TinyVLM, Path], tmp_path: Path, shown: list[Any], returned: list[Any], message: str
) -> None:
    trainer = _trainer(TrajectoryImagesGRPOTrainer, vlm, tmp_path, shown)
    inner = trainer.rollout_func
    trainer.rollout_func = lambda prompts, t: {**inner(prompts, t), TRAJECTORY_IMAGES: returned}
    with pytest.raises(TrajectoryImagesError, match=message):
        trainer._generate_and_score_completions([{"prompt": PROMPT}, {"prompt": PROMPT}])


def test_one_train_step_with_trajectory_images_changes_the_weights(vlm: tuple[TinyVLM, Path], tmp_path: Path) -> None:
    trainer = _trainer(TrajectoryImagesGRPOTrainer, vlm, tmp_path, [[RED, BLUE], []], learning_rate=0.05)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = [name for name, p in before.items() if not torch.equal(p, after[name].detach())]
    assert trainer.state.global_step == 1
    assert any("vision_model" in name for name in changed), "the vision tower got no gradient"
    assert any("text_model" in name for name in changed)
