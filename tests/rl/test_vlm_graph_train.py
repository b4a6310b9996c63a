"""A vision-language policy trained through the real graph: images observed mid-trajectory reach GRPO's forward passes.

The policy is the tiny random Idefics3 (``tiny-vlm``), warmed up in a few seconds to open its plan
turn with a plan and an image call, so that every rollout makes an image, and its reflect turn
sees it (``observe="image"``) through :class:`~visioncreator.policy.TransformersVLMPolicy`. A
forward hook on every vision tower records the pixel values it gets: those of the rollout's
generation and those of TRL's loss must be the images the trajectories saw, read from the store.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

import torch

from visioncreator.policy import PolicyRequest, TransformersVLMPolicy
from visioncreator.rl.train.config import GRPOStage, LoraSpec, PolicyModel, TaskSource
from visioncreator.rl.train.rollout import images_seen, load_tasks

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

TASKS = TaskSource(splits=("single",), limit=1, fault_rate=0.0)
TARGET = (
    '<plan>[{"step":1,"goal":"x","tool":"text_to_image"}]</plan>'
    '<tool_call>{"name":"text_to_image","arguments":{"prompt":"x"},"step":1}</tool_call><|im_end|>'
)


class _Store:
    def __init__(self, root: Path) -> None:
        from visioncreator.tool_servers import ImageStore

        self.images = ImageStore(root)

    async def read(self, handle: str) -> bytes:
        return self.images.read_bytes(handle)


async def _plan_request(store: Path) -> PolicyRequest:
    """The graph's first plan request on the task (the expert's run gives its messages)."""
    from visioncreator.graph.offline import expert_policy
    from visioncreator.rl import CollectConfig, collect
    from visioncreator.rl.collection.collector import synthetic_tools

    config = CollectConfig(group_size=1, store=store, fault_rate=0.0)
    async with synthetic_tools(config) as tools:
        [record] = await collect(load_tasks(TASKS), policy=expert_policy(), tools=tools, config=config)
    return PolicyRequest(messages=record.messages[: record.turns[0].n_messages], node="plan")


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny VLM after a short warm-up: its plan turn holds a plan and an image call."""
    from visioncreator.rl.train.models import load_policy_model, model_dir_for, save_policy_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vlm-models")
    model, processor = load_policy_model(model_dir_for(PolicyModel(model="tiny-vlm"), root))
    request = asyncio.run(_plan_request(root / "store"))
    policy = TransformersVLMPolicy(model, processor, images=_Store(root / "store"))
    prompt = asyncio.run(policy.prompt_ids(request))
    target = processor.tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    inputs = torch.tensor([prompt[-1:] + target])
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(target))[None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for step in range(100):  # the whole call then has probability ~0.98 at temperature 0.7
        if step % 10 == 0:  # the prompt's keys and values, refreshed as the weights move
            with torch.no_grad():
                cache = model(input_ids=torch.tensor([prompt[:-1]]), use_cache=True).cache
        logits = model(input_ids=inputs, cache=copy.deepcopy(cache), position_ids=positions).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(target))
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    torch.set_num_threads(threads)
    return save_policy_model(model, processor, root / "warm")


@pytest.fixture
def vision_calls() -> Iterator[list[dict[str, Any]]]:
    """Every call of an Idefics3 vision tower while the test runs: its pixel values and its pass.

    ``generate``: a rollout's turn (the policy generates in inference mode); ``score``: TRL's old or
    reference log-probabilities (no grad); ``loss``: TRL's loss (grad on).
    """
    from transformers.models.idefics3.modeling_idefics3 import Idefics3VisionTransformer

    calls: list[dict[str, Any]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if isinstance(module, Idefics3VisionTransformer):
            pixels = kwargs.get("pixel_values", args[0] if args else None)
            mode = "generate" if torch.is_inference_mode_enabled() else "loss" if torch.is_grad_enabled() else "score"
            calls.append({"pixels": pixels.detach().clone(), "mode": mode})

    handle = torch.nn.modules.module.register_module_forward_hook(hook, with_kwargs=True)
    yield calls
    handle.remove()


def _policy(vlm_dir: Path, lora: LoraSpec | None = None) -> PolicyModel:
    return PolicyModel(model=str(vlm_dir), lora=lora, max_new_tokens=40, temperature=0.7, torch_threads=1)


def _same_images(seen: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether two stacks of images are the same images in some order."""
    if seen.shape != expected.shape:
        return False
    left = sorted(seen.flatten(1).tolist())
    right = sorted(expected.flatten(1).tolist())
    return all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5) for a, b in zip(left, right, strict=True))


@pytest.mark.parametrize("lora", [None, LoraSpec(r=4, alpha=8)], ids=["full", "lora"])
def test_a_grpo_step_through_the_graph_feeds_the_observed_images_to_the_forward_passes(
    vlm_dir: Path, tmp_path: Path, vision_calls: list[dict[str, Any]], lora: LoraSpec | None
) -> None:
    from transformers import AutoProcessor

    from visioncreator.rl.train.grpo import train_grpo

    stage = GRPOStage(
        tasks=TASKS,
        num_generations=2,
        groups_per_step=1,
        max_steps=1,
        max_turns=2,
        max_completion_length=1024,
        observe="image",
        beta=0.1,
    )
    batches: list[Mapping[str, Any]] = []
    result = train_grpo(stage, _policy(vlm_dir, lora), output_dir=tmp_path / "grpo", on_batch=batches.append)

    [batch] = batches
    processor = AutoProcessor.from_pretrained(vlm_dir)
    per_sample = [images_seen(r.record, r.sample, tmp_path / "grpo" / "store") for r in batch["rollouts"]]
    for rollout, images in zip(batch["rollouts"], per_sample, strict=True):
        record = rollout.record
        # The image was made mid-trajectory: the first turn saw none, the reflect turn saw it.
        assert not any(m.images for m in record.messages[: record.turns[0].n_messages])
        assert images, "the rollout showed the policy no image"
        image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        assert list(rollout.sample.completion_ids).count(image_token) == len(images) * processor.image_seq_len
        assert record.turns[1].node == "reflect"
    expected = processor.image_processor(images=[im for ims in per_sample for im in ims], return_tensors="pt")
    expected_pixels = expected["pixel_values"].flatten(0, 1)  # one image a sample: (n, 3, H, W)
    passes = {mode: [c["pixels"] for c in vision_calls if c["mode"] == mode] for mode in ("generate", "score", "loss")}
    assert {mode: len(calls) for mode, calls in passes.items()} == {"generate": 2, "score": 1, "loss": 1}
    # The rollouts' reflect turns (one generate each), the reference log-probabilities (beta > 0; with
    # LoRA the adapters switched off) and TRL's loss all saw exactly those images.
    for mode, calls in passes.items():
        assert _same_images(torch.cat(calls), expected_pixels), mode
    assert batch["pixel_values"].shape[:2] == (2, 1)
    assert [e["rollouts/images"] for e in result.log_history if "rollouts/images" in e] == [2.0]


def test_observing_images_with_a_text_model_is_refused(tmp_path: Path) -> None:
    from visioncreator.rl.train.grpo import train_grpo
    from visioncreator.rl.train.harness import TrainingError
    from visioncreator.rl.train.models import model_dir_for

    tiny = model_dir_for(PolicyModel(model="tiny"), tmp_path / "models")
    stage = GRPOStage(
        tasks=TASKS, num_generations=2, groups_per_step=1, max_steps=1, max_completion_length=64, observe="image"
    )
    with pytest.raises(TrainingError, match=r"observe='image' shows the policy images, but .* is a text model"):
        train_grpo(stage, PolicyModel(model=str(tiny)), output_dir=tmp_path / "grpo")


def test_the_cli_trains_a_vlm_with_observe_image(
    vlm_dir: Path, tmp_path: Path, vision_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    from visioncreator.rl.train.cli import main

    config = tmp_path / "train.toml"
    config.write_text(
        f'output_dir = "{tmp_path / "run"}"\n'
        f'[policy]\nmodel = "{vlm_dir}"\nmax_new_tokens = 40\ntemperature = 0.7\ntorch_threads = 1\n'
        '[[stages]]\nkind = "grpo"\nname = "grpo"\nmax_steps = 1\nnum_generations = 2\ngroups_per_step = 1\n'
        "max_turns = 2\n"
        "max_completion_length = 1024\nsave_steps = 1\n"
        'tasks = { splits = ["single"], limit = 1, fault_rate = 0.0 }\n'
    )
    assert main(["grpo", "--config", str(config), "--observe", "image"]) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "run" / "01-grpo" / "stage.json").read_text())
    assert [e["rollouts/images"] for e in record["log_history"] if "rollouts/images" in e] == [2.0]
    assert [c["mode"] for c in vision_calls] == [
        "generate",
        "generate",
        "score",
        "loss",
    ]  # score: the KL reference (beta 0.04 by default)
    # The stage's model is a VLM directory again (processor saved with it).
    assert (Path(record["model_dir"]) / "processor_config.json").is_file()


def test_a_held_out_evaluation_of_a_vlm_shows_it_the_images(
    vlm_dir: Path, tmp_path: Path, vision_calls: list[dict[str, Any]]
) -> None:
    from visioncreator.rl import read_records
    from visioncreator.rl.train import evaluate

    point = evaluate(
        vlm_dir, TASKS, policy=_policy(vlm_dir), store=tmp_path / "store", max_turns=2,
        temperature=0.7, records=tmp_path / "eval.jsonl",
    )  # fmt: skip
    [record] = read_records(tmp_path / "eval.jsonl")
    assert point.n == 1
    shown = [h for m in record.messages[: record.turns[-1].n_messages] for h in m.images]
    assert shown, "the evaluation showed the policy no image"
    # The reflect turn saw the image the plan's call made: the vision tower ran on it while generating.
    assert record.turns[-1].node == "reflect"
    assert [c["mode"] for c in vision_calls] == ["generate"]
