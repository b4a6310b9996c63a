"""Where training runs and in which precision: :func:`resolve_placement` of a :class:`PolicyModel`.

``policy.device`` and ``policy.dtype`` default to ``auto``: CUDA with bfloat16 where torch sees a
GPU (float16 on a GPU without bfloat16), else the CPU in float32 (also under
``accelerate launch --cpu``). The resolved
:class:`Placement` feeds both the TRL arguments (``use_cpu``, ``bf16``, ``fp16``:
:meth:`Placement.trl_args`) and model loading (:meth:`Placement.weight_dtype`).

The dtype is the *compute* precision. Weights that train stay in float32 (full fine-tuning: the
optimiser's update of a 1e-5 learning rate is below bfloat16's resolution, so bfloat16 master
weights would drop most updates) and the forward passes run under autocast; weights that do not
train (the base model under LoRA adapters) are loaded in the compute dtype, halving their memory.

Under ``accelerate launch`` each process gets its own GPU from accelerate; ``cuda`` means "the
GPU this process was given".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from visioncreator.rl.train.config import ConfigError, PolicyModel

__all__ = [
    "Placement",
    "is_main_process",
    "main_process_first",
    "process_count",
    "process_device",
    "resolve_placement",
]

Device = Literal["cpu", "cuda"]
DType = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True, kw_only=True)
class Placement:
    """A resolved device and compute dtype (never ``auto``)."""

    device: Device
    """``cpu`` or ``cuda``."""
    dtype: DType
    """The compute precision: ``float32``, or mixed precision in ``bfloat16``/``float16``."""

    def trl_args(self) -> dict[str, Any]:
        """The TRL/transformers ``TrainingArguments`` fields of this placement."""
        return {"use_cpu": self.device == "cpu", "bf16": self.dtype == "bfloat16", "fp16": self.dtype == "float16"}

    def weight_dtype(self, *, trained: bool) -> DType:
        """The dtype to load weights in: float32 when they train (full fine-tuning), else the compute dtype."""
        return "float32" if trained else self.dtype

    def rollout_dtype(self, *, lora: bool) -> Literal["same", "bfloat16", "float16"]:
        """The dtype local rollouts generate in (``LocalPolicySettings.compute_dtype``).

        Full fine-tuning in mixed precision keeps float32 weights: rollouts then generate from a
        copy in the compute dtype, as the training steps compute. Under LoRA the frozen base is
        already in it, and float32 computes in float32: ``same``.
        """
        return "same" if lora or self.dtype == "float32" else self.dtype


def resolve_placement(policy: PolicyModel) -> Placement:
    """The device and dtype ``policy`` asks for, with ``auto`` resolved on this machine.

    Raises:
        ConfigError: CUDA is asked for and torch sees none, or the dtype cannot run on the
            device (float16 on the CPU, bfloat16 on a GPU without it); the message names the field.

    """
    import torch

    # `accelerate launch --cpu` asks every process for the CPU: auto follows it.
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    cuda = torch.cuda.is_available() and not (forced_cpu and policy.device == "auto")
    if policy.device == "cuda" and not cuda:
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise ConfigError(
            f"policy.device: 'cuda' asked for, but torch {torch.__version__} sees no GPU ({build}); "
            "use device = 'auto' or 'cpu'"
        )
    device: Device = "cuda" if policy.device == "cuda" or (policy.device == "auto" and cuda) else "cpu"
    bf16_ok = device == "cpu" or torch.cuda.is_bf16_supported()
    dtype: DType
    if policy.dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16" if bf16_ok else "float16"
    else:
        dtype = policy.dtype
    if dtype == "float16" and device == "cpu":
        raise ConfigError("policy.dtype: float16 mixed precision needs a GPU (device cpu); use float32 or bfloat16")
    if dtype == "bfloat16" and not bf16_ok:
        raise ConfigError("policy.dtype: this GPU has no bfloat16; use float16 or auto")
    return Placement(device=device, dtype=dtype)


def _state(placement: Placement) -> Any:
    """Accelerate's process state (a singleton; the trainer's arguments re-create it the same way)."""
    from accelerate import PartialState  # type: ignore[import-untyped,unused-ignore]

    return PartialState(cpu=placement.device == "cpu")


def process_count(placement: Placement) -> int:
    """How many training processes run together (``accelerate launch --num_processes N``; else 1)."""
    return int(_state(placement).num_processes)


def process_device(placement: Placement) -> str:
    """This process's torch device: ``cpu``, or its own GPU (``cuda:N``) under ``accelerate launch``."""
    return str(_state(placement).device)


def is_main_process(placement: Placement) -> bool:
    """Whether this is the main training process (always, without ``accelerate launch``)."""
    return bool(_state(placement).is_main_process)


@contextlib.contextmanager
def main_process_first(placement: Placement) -> Iterator[None]:
    """Run the body on the main process first, then on the others (e.g. a shared data collection)."""
    with _state(placement).main_process_first():
        yield
