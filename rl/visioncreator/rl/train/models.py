"""The policy model being trained: where its weights come from, how it loads, LoRA, and how it is saved.

:class:`~visioncreator.rl.train.config.PolicyModel` names the model: ``tiny`` (a random Qwen2 built
on the spot with :func:`~visioncreator.policy.tiny_lm.build_tiny_lm`, its tokenizer trained on
our real system prompt so prompts stay short), ``smollm2`` (the packaged SmolLM2-135M-Instruct,
:func:`~visioncreator.policy.smollm.load_smollm`) or a model directory (a previous stage's
output included). Every stage saves a plain Hugging Face directory (LoRA adapters merged in), so
the next stage, :class:`~visioncreator.policy.local.TransformersPolicy` and vLLM all load it.

Needs the ``rl`` extra (torch, transformers, peft); imports them lazily.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from visioncreator.policy import staged_dir
from visioncreator.rl.errors import RLError
from visioncreator.rl.train.config import LoraSpec, PolicyModel
from visioncreator.tool_servers import POLICY_TOOLS

__all__ = [
    "ModelError",
    "default_cache_dir",
    "is_vlm_dir",
    "load_policy_model",
    "lora_config",
    "model_dir_for",
    "save_policy_model",
]

_TINY_DIR = "tiny-qwen2"
_TINY_VLM_DIR = "tiny-idefics3"
# Bump when what build_tiny_lm is given changes, so that old caches are rebuilt.
_TINY_LAYOUT = "1"


class ModelError(RLError, ValueError):
    """A policy model that cannot be found or loaded (the message names it)."""


def default_cache_dir() -> Path:
    """Where built or converted models live: ``$XDG_CACHE_HOME/visioncreator/models``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "visioncreator" / "models"


async def _system_prompts() -> list[str]:
    """The real system prompt (real tool schemas, default budgets), for the tiny tokenizer's corpus."""
    from visioncreator.graph import Budgets, ToolClient
    from visioncreator.policy import system_message
    from visioncreator.tool_servers import ServerSettings, build_server

    with tempfile.TemporaryDirectory(prefix="vc-tools-") as store:
        async with ToolClient(server=build_server(ServerSettings(store_root=Path(store)))) as tools:
            specs = tools.policy_tools()
    budgets: dict[str, int | float] = dict(Budgets().as_dict())
    return [system_message(specs, budgets).content, system_message(specs, {**budgets, "reflection": 0}).content]


def _build_tiny(out: Path) -> Path:
    from visioncreator.policy import build_tiny_lm

    marker = out / ".visioncreator-layout"
    if marker.is_file() and marker.read_text().strip() == _TINY_LAYOUT:
        return out
    with staged_dir(out) as staging:
        build_tiny_lm(staging, tool_names=POLICY_TOOLS, extra_corpus=asyncio.run(_system_prompts()))
        (staging / ".visioncreator-layout").write_text(_TINY_LAYOUT + "\n")
    return out


def _build_tiny_vlm(out: Path, tiny_dir: Path) -> Path:
    from visioncreator.rl.train.tiny_vlm import write_tiny_vlm

    marker = out / ".visioncreator-layout"
    if marker.is_file() and marker.read_text().strip() == _TINY_LAYOUT:
        return out
    with staged_dir(out) as staging:
        write_tiny_vlm(staging, tiny_dir)
        (staging / ".visioncreator-layout").write_text(_TINY_LAYOUT + "\n")
    return out


def is_vlm_dir(path: str | Path) -> bool:
    """Whether a model directory holds a vision-language model (it has a processor config)."""
    return (Path(path) / "processor_config.json").is_file() or (Path(path) / "preprocessor_config.json").is_file()


def model_dir_for(policy: PolicyModel, cache_dir: Path | None = None) -> Path:
    """The model directory ``policy.model`` names, building or converting it on first use.

    Args:
        policy: The policy; ``model`` is ``tiny``, ``tiny-vlm`` (a random Idefics3 over the tiny
            model's tokenizer, :func:`~visioncreator.rl.train.tiny_vlm.write_tiny_vlm`), ``smollm2`` or a directory.
        cache_dir: Where ``tiny`` and ``smollm2`` are kept; default :func:`default_cache_dir`.

    Raises:
        ModelError: ``policy.model`` is neither a known name nor a model directory.

    """
    cache = cache_dir or default_cache_dir()
    if policy.model == "tiny":
        return _build_tiny(cache / _TINY_DIR)
    if policy.model == "tiny-vlm":
        return _build_tiny_vlm(cache / _TINY_VLM_DIR, _build_tiny(cache / _TINY_DIR))
    if policy.model == "smollm2":
        from visioncreator.policy import load_smollm

        return load_smollm(cache)
    path = Path(policy.model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(
            f"policy model {policy.model!r} is not 'tiny', 'tiny-vlm', 'smollm2' or a model directory "
            "(no config.json there)"
        )
    return path


def lora_config(spec: LoraSpec | None) -> Any:
    """A ``peft.LoraConfig`` for ``spec`` (causal LM), or ``None`` for full fine-tuning."""
    if spec is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
    )


def load_policy_model(
    model_dir: str | Path, *, torch_threads: int | None = None, dtype: str = "float32"
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a model directory, on the CPU in ``dtype`` (float32, bfloat16, float16).

    The trainer moves the model to its device; ``dtype`` is the weights' (see
    :meth:`visioncreator.rl.train.device.Placement.weight_dtype`).

    A vision-language directory (:func:`is_vlm_dir`) gives ``(model, processor)`` instead, loaded
    with ``AutoModelForImageTextToText`` and ``AutoProcessor``.

    Raises:
        ModelError: The directory does not hold a loadable causal LM.

    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a model directory (no config.json)")
    if is_vlm_dir(path):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(path)  # type: ignore[no-untyped-call]
        if processor.tokenizer.pad_token is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32), processor
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def save_policy_model(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save a trained model as a plain Hugging Face directory (LoRA adapters merged in) with its tokenizer.

    Returns:
        ``out_dir``, loadable by ``from_pretrained``, :class:`TransformersPolicy` and vLLM.

    """
    from peft import PeftModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
