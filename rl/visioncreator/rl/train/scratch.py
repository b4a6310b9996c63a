"""A starting policy built from scratch: random weights, and a tokenizer trained on the text it will learn.

Where no pretrained model can travel (a lent GPU machine reaches no package index and gets at most
64 MiB of files; the packaged SmolLM2 is 93 MB), the learning benchmark builds its starting model
on the spot and SFT-trains it from scratch on expert trajectories (``benchmarks/gpu_learning.py``).
:func:`build_scratch_model` writes that model: a ``Qwen2ForCausalLM`` of one of the :data:`SIZES`
with seeded random weights and a byte-level BPE tokenizer trained on :func:`conversation_texts` of
the trajectories (with :func:`visioncreator.policy.build_tiny_lm`, so the tokenizer, chat template
and generation config are exactly those of the ``tiny`` model: transformers, TRL and vLLM load it).
A tokenizer trained on the text it will see makes its words single tokens: the tags, the JSON keys,
the tool names and the request vocabulary (the Qwen2 pre-tokenizer still splits text into words, so
an expert trajectory is about 3k tokens, 2.2k of them the system prompt).

Needs the ``rl`` extra (torch, transformers, tokenizers); imports them lazily.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.graph import Trajectory
from visioncreator.tool_servers import POLICY_TOOLS

__all__ = ["SIZES", "ScratchSize", "build_scratch_model", "conversation_texts", "parameter_count"]


class ScratchSize(BaseModel):
    """The shape of a model built from scratch (a Qwen2 decoder; MLP width twice the hidden size)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int = Field(ge=32, description="Hidden size; hidden // heads must be at least 32 (vLLM's CPU attention).")
    layers: int = Field(ge=1, description="Decoder layers.")
    heads: int = Field(ge=1, description="Attention heads (key/value heads too).")
    vocab_size: int = Field(default=4096, ge=300, description="Most BPE tokens before the format tags are added.")


SIZES: dict[str, ScratchSize] = {
    "tiny": ScratchSize(hidden=64, layers=2, heads=2, vocab_size=2048),
    "small": ScratchSize(hidden=256, layers=4, heads=4),
    "base": ScratchSize(hidden=512, layers=8, heads=8, vocab_size=8192),
}
"""Named sizes: ``tiny`` for tests on a CPU (~0.2M parameters), ``small`` (~3M) and ``base`` (~22M) for a GPU."""


def conversation_texts(trajectories: Iterable[Trajectory]) -> Iterator[str]:
    """Every message text of the trajectories, as SFT renders them (node instructions included).

    Args:
        trajectories: Finished trajectories with at least one assistant turn (others are skipped).

    Yields:
        Each message's text: the system prompt, the request, the policy's turns, the tool
        observations and the node instructions, in order.

    """
    from visioncreator.rl.exports import ExportError, sft_conversation

    for trajectory in trajectories:
        try:
            messages = sft_conversation(trajectory, images=False)["messages"]
        except ExportError:
            continue
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                yield content
            else:  # content parts: keep the text ones
                yield "".join(part.get("text", "") for part in content if isinstance(part, dict))


def build_scratch_model(
    out_dir: str | Path,
    *,
    texts: Iterable[str],
    size: ScratchSize | str = "small",
    max_positions: int = 8192,
    seed: int = 0,
) -> Path:
    """Build a random-weight chat model whose tokenizer is trained on ``texts``, into ``out_dir``.

    Args:
        out_dir: Directory to write (created; files of the same names are replaced).
        texts: Tokenizer training text, e.g. :func:`conversation_texts` of expert trajectories.
        size: A :class:`ScratchSize` or the name of one of :data:`SIZES`.
        max_positions: Longest sequence the model takes (prompt and completion).
        seed: Seeds the tokenizer's filler corpus and the weights: the same inputs give the same files.

    Returns:
        ``out_dir``: a plain Hugging Face model directory (``from_pretrained``, TRL, vLLM), with a
        ``scratch.json`` that records the size, the corpus and the parameter count.

    Raises:
        ValueError: An unknown size name, no text, or a head size under 32.

    """
    from visioncreator.policy import build_tiny_lm

    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown scratch model size {size!r}; known: {', '.join(SIZES)}")
        size = SIZES[size]
    corpus = [t for t in texts if t]
    if not corpus:
        raise ValueError("build_scratch_model needs tokenizer training text (texts is empty)")
    out = Path(out_dir)
    build_tiny_lm(
        out,
        tool_names=POLICY_TOOLS,
        vocab_size=size.vocab_size,
        hidden=size.hidden,
        layers=size.layers,
        heads=size.heads,
        max_positions=max_positions,
        seed=seed,
        extra_corpus=corpus,
    )
    info = {
        **size.model_dump(),
        "max_positions": max_positions,
        "seed": seed,
        "corpus_documents": len(corpus),
        "corpus_chars": sum(len(t) for t in corpus),
        "parameters": parameter_count(out),
    }
    (out / "scratch.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def parameter_count(model_dir: str | Path) -> int:
    """Parameters of the model saved in ``model_dir`` (tied embeddings counted once), read from its weights."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        handle: Any
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = handle.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= int(dim)
                total += count
    return total
