"""The tiny random chat model: a standard Hugging Face directory, deterministic, ids stable on reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from visioncreator.policy import build_tiny_lm
from visioncreator.policy.chat_template import CHAT_TEMPLATE, END_OF_TURN, FORMAT_TAGS, SPECIAL_TOKENS
from visioncreator.policy.local.tiny_lm import corpus
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path_factory.mktemp("tiny") / "model")


def test_the_directory_is_a_standard_model_dir(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert {"tokenizer_config.json", "chat_template.jinja"} <= names
    assert json.loads((tiny_dir / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    assert (tiny_dir / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] >= 32


def test_transformers_loads_it_and_ids_survive_the_reload(tiny_dir: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    raw = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    assert type(tok).__name__ == "Qwen2Tokenizer"
    # AutoTokenizer rebuilds Qwen2's pre-tokenizer: the trained one must give the same ids.
    for doc in [*corpus(POLICY_TOOLS, seed=7, n_conversations=10), "héllo\n\n  wörld 12345 <|im_start|>x<|im_end|>"]:
        assert tok(doc, add_special_tokens=False)["input_ids"] == raw.encode(doc).ids
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    assert tok.eos_token == END_OF_TURN
    for tag in FORMAT_TAGS:
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1
        assert tok.decode(ids, skip_special_tokens=True) == tag
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.vocab_size == len(tok)
    assert model.generation_config.eos_token_id == [2, 0]


def test_apply_chat_template_tokenizes_the_rendered_text(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "a red fox"}]
    encoded: Any = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    text = str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    assert list(encoded["input_ids"]) == tok(text, add_special_tokens=False)["input_ids"]
    assert text.endswith("<|im_start|>assistant\n")


def test_the_same_seed_gives_the_same_files(tmp_path: Path, tiny_dir: Path) -> None:
    again = build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path / "again")
    other = build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path / "other", seed=1)
    for path in tiny_dir.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()


def test_bad_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="head size"):
        build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path / "m", hidden=64, heads=4)
    with pytest.raises(NotImplementedError):
        build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path / "m", vision=True)
