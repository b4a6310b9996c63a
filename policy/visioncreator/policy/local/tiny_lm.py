"""Tiny random chat models, built on the spot, that transformers and vLLM both load.

:func:`build_tiny_lm` writes a standard Hugging Face model directory: a ``Qwen2ForCausalLM``
with random weights, a byte-level BPE tokenizer trained in about a second on text our own
writers produce (so the tags, the JSON and the tool names tokenize into few tokens), our chat
template (:mod:`visioncreator.policy.chat_template`) and a generation config. Nothing is
downloaded. The output is a function of the arguments: the same seed gives the same files.

Needs the ``transformers`` extra (torch, transformers, tokenizers).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from visioncreator.policy.chat_template import CHAT_TEMPLATE, END_OF_TURN, FORMAT_TAGS, SPECIAL_TOKENS
from visioncreator.policy.format import (
    write_answer,
    write_plan,
    write_reflect,
    write_think,
    write_tool_call,
    write_turn,
)
from visioncreator.policy.prompting import (
    Observation,
    error_message,
    node_instruction,
    observation_message,
    system_message,
    task_message,
)
from visioncreator.policy.types import Answer, FormatError, PlanStep, Reflection, Task, ToolCall, ToolSpec

__all__ = ["build_tiny_lm", "corpus", "corpus_tools"]

_WORD_TEXT = (
    "red fox reading a newspaper on a park bench blue cat orange sky stormy four panel story same character "
    "product shot three angles Van Gogh painting sign that says hello two dogs left right above below "
    "green apple yellow car small large watercolor photo studio light night city mountain lake"
)
_WORDS = tuple(_WORD_TEXT.split())


def corpus_tools(names: Sequence[str]) -> tuple[ToolSpec, ...]:
    """Tool specs of the given names, as the tokenizer corpus writes them (pass the server's tool names)."""
    return tuple(
        ToolSpec(
            name=name,
            description=f"{name.replace('_', ' ')}: returns an image handle and its metadata.",
            input_schema={
                "type": "object",
                "properties": {
                    "prompt": {"type": "string"},
                    "seed": {"type": "integer"},
                    "image": {"type": "string"},
                    "references": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["prompt"],
            },
        )
        for name in names
    )


def _handle(rng: random.Random) -> str:
    return "img_" + "".join(rng.choice("0123456789abcdef") for _ in range(24))


def _phrase(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def corpus(tool_names: Sequence[str], seed: int = 0, n_conversations: int = 60) -> Iterator[str]:
    """Text in our format for training a tiny tokenizer: prompts, turns, observations, errors.

    Args:
        tool_names: The tools the conversations call (the tool server's policy tools).
        seed: Seed of the text generator.
        n_conversations: How many made-up conversations to write.

    Yields:
        Documents (strings) that together cover every tag, tool name and message kind.

    """
    rng = random.Random(seed)
    tools = corpus_tools(tool_names)
    yield system_message(tools, {"max_turns": 40, "max_tool_calls": 48}).content
    for spec in tools:
        yield json.dumps({"type": "function", "function": spec.model_dump()}, ensure_ascii=False)
    for node in ("plan", "act", "reflect", "finish"):
        yield node_instruction(node)
    for _ in range(n_conversations):
        task = Task(request=_phrase(rng, rng.randint(3, 12)), n_images=rng.randint(1, 4), split="single")
        handles = [_handle(rng) for _ in range(task.n_images)]
        tool = rng.choice(tuple(tool_names))
        step = PlanStep(step=1, goal=task.request, tool=tool, prompt=_phrase(rng, 5))
        call = ToolCall(name=tool, arguments={"prompt": step.prompt, "seed": rng.randint(0, 9999)}, step=1)
        obs = Observation(call_id=f"call_{rng.randint(0, 99)}", name=tool, ok=True, result={"handle": handles[0]})
        verdict = rng.choice(("accept", "redo", "revise"))
        yield task_message(task).content
        yield write_turn(write_think(_phrase(rng, 8)), write_plan([step]))
        yield write_turn(write_tool_call(call))
        yield "<tool_response>\n" + observation_message([obs]).content + "\n</tool_response>"
        yield write_turn(write_reflect(Reflection(verdict=verdict, faults=(_phrase(rng, 3),), image=handles[0])))
        yield write_turn(write_answer(Answer(images=tuple(handles))))
        yield error_message("act", [FormatError(code="bad_json", message="<tool_call> body is not valid JSON")]).content


def _train_tokenizer(tool_names: Sequence[str], vocab_size: int, seed: int, extra: Iterable[str]) -> Any:
    """A byte-level BPE with exactly the pipeline transformers' Qwen2 tokenizer rebuilds on load."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Extra documents count twice, so that text seen once still earns merges (min_frequency=2).
    docs = [*corpus(tool_names, seed), *(doc for doc in extra for _ in range(2))]
    tok.train_from_iterator(docs, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TAGS])
    return tok


def _save_tokenizer(tok: Any, out_dir: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token=END_OF_TURN,
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out_dir)
    # Name the class that AutoTokenizer picks for Qwen2 anyway, and keep the template inside
    # tokenizer_config.json too, for readers (older transformers, other servers) that only look there.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return hf_tok


def _random_model(hf_tok: Any, *, hidden: int, layers: int, heads: int, max_positions: int, seed: int) -> Any:
    """A ``Qwen2ForCausalLM`` with seeded random weights, sized to ``hf_tok`` and stopping on its tokens."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    ids = {t: hf_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2Config(
        vocab_size=len(hf_tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids[END_OF_TURN],
        pad_token_id=ids["<|endoftext|>"],
        dtype="float32",
    )
    # The weights come from torch's global generator: fork it so that building a model does not
    # change the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        eos_token_id=[ids[END_OF_TURN], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|im_start|>"],
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=256,
    )
    return model


def build_tiny_lm(
    out_dir: Path,
    *,
    tool_names: Sequence[str],
    vocab_size: int = 4096,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 8192,
    seed: int = 0,
    extra_corpus: Iterable[str] = (),
    vision: bool = False,
) -> Path:
    """Build a tiny random Qwen2 chat model with a freshly trained tokenizer into ``out_dir``.

    Args:
        out_dir: Directory to write (created; existing files of the same names are replaced).
        tool_names: The tools its corpus calls, so that their names tokenize into few tokens (the tool
            server's policy tools: ``visioncreator.tool_servers.POLICY_TOOLS``).
        vocab_size: Most BPE tokens before the format tags are added (the trainer stops earlier when
            the corpus runs out of pairs seen twice; the model's embedding holds exactly the
            tokenizer's length).
        hidden: Hidden size. ``hidden // heads`` must be at least 32 for vLLM's CPU attention.
        layers: Number of decoder layers.
        heads: Attention heads (key/value heads too).
        max_positions: Maximum sequence length (our system prompt alone is ~1k tokens).
        seed: Seeds the corpus and the weights: the same seed gives the same files.
        extra_corpus: More tokenizer training text, e.g. the real system prompt with the real tool
            schemas (``system_message(client.policy_tools(), budgets).content``): text the tokenizer
            has seen costs far fewer tokens (the real system prompt: ~3.7k tokens without it).
        vision: Reserved for a tiny vision-language model; not built yet.

    Returns:
        ``out_dir``, loadable by ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained`` and by
        ``vllm`` (``--model out_dir``).

    Raises:
        NotImplementedError: ``vision=True``.
        ValueError: A head size under 32.

    """
    if vision:
        raise NotImplementedError("tiny vision-language models are not built yet")
    if hidden % heads or hidden // heads < 32:
        raise ValueError(f"hidden={hidden} over heads={heads} must give a head size of at least 32 (vLLM CPU)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer(tool_names, vocab_size, seed, extra_corpus)
    hf_tok = _save_tokenizer(tok, out_dir)
    model = _random_model(hf_tok, hidden=hidden, layers=layers, heads=heads, max_positions=max_positions, seed=seed)
    model.save_pretrained(out_dir)
    return out_dir
