"""The local policy's ``generate`` streamer: pieces of text that are never taken back."""

from __future__ import annotations

import pytest
import torch

from visioncreator.policy import build_tiny_lm
from visioncreator.policy.local.streamer import TextPieces
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path_factory.mktemp("t") / "m")
    )


def test_a_character_split_over_tokens_is_held_back_until_whole(tokenizer: object) -> None:
    text = '<think>a fox 🦊 at the café, "ÆØÅ" 日本</think>'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    pieces: list[str] = []
    streamer = TextPieces(tokenizer, pieces.append)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert len(ids) > len(text) // 4  # the tiny vocabulary splits the multi-byte characters
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(pieces) > 5
