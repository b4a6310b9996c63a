"""A tiny random vision-language policy (Idefics3), built in memory in about a second.

Idefics3 (the SmolVLM family) is the tiny VLM that runs here end to end: its processor needs no
torchvision (transformers falls back to the PIL image processor, which we name directly), while
the Qwen-VL processors need torchvision's video-processor registry. The model has random weights
and ~30k parameters, enough for tests of the training path: images change the log-probabilities
of the tokens after them, and a GRPO step changes the weights.

Needs the ``rl`` extra (torch, transformers, tokenizers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from visioncreator.tool_servers import POLICY_TOOLS

__all__ = ["IMAGE_TOKEN", "TinyVLM", "build_tiny_vlm", "write_tiny_vlm"]

IMAGE_TOKEN = "<image>"
"""The placeholder an Idefics3 processor expands into ``image_seq_len`` image tokens per image tile."""

_SPECIAL = ("<fake_token_around_image>", IMAGE_TOKEN, "<end_of_utterance>", "<global-img>")
_WORDS = (
    "user",
    "assistant",
    "tool",
    "system",
    ":",
    ".",
    ",",
    "'",
    '"',
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "<",
    ">",
    "/",
    "=",
    "the",
    "a",
    "an",
    "is",
    "here",
    "image",
    "images",
    "of",
    "and",
    "draw",
    "make",
    "edit",
    "show",
    "shows",
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "cat",
    "dog",
    "fox",
    "sky",
    "bench",
    "park",
    "accept",
    "redo",
    "revise",
    "think",
    "plan",
    "tool_call",
    "reflect",
    "answer",
    *(str(name) for name in POLICY_TOOLS),
    "img_a",
    "img_b",
    "img_c",
    "prompt",
    "name",
    "arguments",
    "verdict",
    "faults",
    "done",
)


class TinyVLM(NamedTuple):
    """A tiny random Idefics3 model and the processor that matches it."""

    model: Any
    """An ``Idefics3ForConditionalGeneration`` with random float32 weights."""
    processor: Any
    """An ``Idefics3Processor`` (PIL image processor, word-level tokenizer)."""


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(("<unk>", "<pad>", "<eos>", *_WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    hf_tok.add_special_tokens({"additional_special_tokens": list(_SPECIAL)})
    return hf_tok


def _layers(hidden: int, layers: int) -> dict[str, int]:
    return {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
    }


def build_tiny_vlm(
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    text_layers: int = 1,
    seed: int = 0,
    tokenizer: Any = None,
) -> TinyVLM:
    """Build a tiny random Idefics3 model and its processor, in memory, without downloads.

    Every image is resized to ``image_size`` square (no splitting into tiles), so each image in a
    text becomes ``<fake_token_around_image><global-img>`` + ``image_seq_len`` image tokens +
    ``<fake_token_around_image>``, with ``image_seq_len = (image_size // patch_size) ** 2 // 4``.

    Args:
        image_size: Side of the (square) image the vision encoder sees, in pixels.
        patch_size: Side of a vision patch; must divide ``image_size`` into an even grid.
        hidden: Hidden size of both the vision and the text transformer (two heads each).
        text_layers: Layers of the text transformer (the vision transformer has one).
        seed: Seeds the weights; the caller's torch random state is left as it was.
        tokenizer: The text tokenizer (e.g. the tiny text model's, trained on our format, with our
            chat template, which the processor then carries); the four Idefics3 special tokens are
            added to it in place. None: a word-level tokenizer of a few dozen words, no chat template.

    Returns:
        The model (float32, training mode off) and its processor.

    Raises:
        ValueError: ``patch_size`` does not divide ``image_size`` into an even number of patches a side.

    """
    grid, rest = divmod(image_size, patch_size)
    if rest or grid % 2:
        raise ValueError(
            f"patch_size={patch_size} must divide image_size={image_size} into an even number of patches a side"
        )
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    if tokenizer is None:
        tokenizer = _tokenizer()
    else:
        tokenizer.add_special_tokens({"additional_special_tokens": list(_SPECIAL)})
    scale_factor = 2
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=grid * grid // scale_factor**2,
        chat_template=getattr(tokenizer, "chat_template", None),
    )
    config = Idefics3Config(
        vision_config=_layers(hidden, 1) | {"image_size": image_size, "patch_size": patch_size},
        text_config=_layers(hidden, text_layers)
        | {
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        scale_factor=scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.train(False)
    return TinyVLM(model=model, processor=processor)


def write_tiny_vlm(out: str | Path, tokenizer_dir: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random Idefics3 model directory whose text side uses the tokenizer in ``tokenizer_dir``.

    The model has a 64-wide, two-layer text transformer (the tiny text model's shape) and a
    32-wide vision tower over 32-pixel images (four image tokens an image). ``AutoProcessor`` and
    ``AutoModelForImageTextToText`` load the directory; so does
    :func:`~visioncreator.rl.train.models.load_policy_model`.

    Args:
        out: The directory to write (created).
        tokenizer_dir: A tokenizer directory, e.g. the tiny text model's (``model_dir_for(PolicyModel(model="tiny"))``).
        seed: Seeds the weights.

    Returns:
        ``out``.

    """
    from transformers import AutoTokenizer

    tiny = build_tiny_vlm(hidden=64, text_layers=2, seed=seed, tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir))
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    tiny.model.save_pretrained(path)
    tiny.processor.save_pretrained(path)
    return path
