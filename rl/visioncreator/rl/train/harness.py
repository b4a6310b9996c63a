"""What both TRL trainers share: the arguments, progress, resume, the final save, and what a stage leaves.

:func:`~visioncreator.rl.train.sft.train_sft` and :func:`~visioncreator.rl.train.grpo.train_grpo`
load the start model with :func:`load_start_model`, build their TRL config from :func:`trl_args`
inside :func:`quiet`, report every log through :func:`progress_callback`, and finish with
:func:`train_and_save`: train (from the latest checkpoint when resuming), then save the final
weights (LoRA merged; the main process writes them) into ``output_dir/model``, a plain model
directory that the next stage, :class:`~visioncreator.policy.local.TransformersPolicy` and vLLM load.

Needs the ``rl`` extra; every heavy import is inside a function.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.rl.errors import RLError
from visioncreator.rl.train.config import GRPOStage, PolicyModel, SFTStage
from visioncreator.rl.train.device import Placement, resolve_placement

__all__ = [
    "MODEL_SUBDIR",
    "Progress",
    "StageResult",
    "TrainingError",
    "load_start_model",
    "progress_callback",
    "quiet",
    "train_and_save",
    "trl_args",
]

Progress = Callable[[dict[str, Any]], None]
"""Called with every TRL log entry plus ``step`` and ``max_steps``."""

MODEL_SUBDIR = "model"


class TrainingError(RLError):
    """A stage that cannot train (no data selected, an inconsistent batch size); the message says why."""


class StageResult(BaseModel):
    """What a finished stage leaves."""

    model_config = ConfigDict(frozen=True)

    model_dir: Path = Field(description="The final weights (LoRA merged) with the tokenizer: a model directory.")
    log_history: list[dict[str, Any]] = Field(description="TRL's log history (loss, reward, ... per logged step).")
    metrics: dict[str, float] = Field(description="Train metrics, plus counts (examples, groups, degenerate groups).")


def progress_callback(progress: Progress | None) -> Any:
    """A ``TrainerCallback`` that calls ``progress`` with every log entry, ``step`` and ``max_steps``."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:
            if progress is not None:
                progress({"step": state.global_step, "max_steps": state.max_steps, **dict(logs or {})})

    return _Progress()


@contextlib.contextmanager
def quiet() -> Any:
    """Silence transformers 5's renaming notices that TRL 1.16 triggers on every step (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning
        )
        yield


def _run_trainer(trainer: Any, output_dir: Path, resume: bool) -> Any:
    """Train (from the latest checkpoint when resuming), with TRL's log printer replaced by ``progress``."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    with quiet():
        return trainer.train(resume_from_checkpoint=_last_checkpoint(output_dir, resume))


def _last_checkpoint(output_dir: Path, resume: bool) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not resume or not output_dir.is_dir():
        return None
    last: str | None = get_last_checkpoint(str(output_dir))  # type: ignore[no-untyped-call]
    return last


def trl_args(stage: SFTStage | GRPOStage, output_dir: Path, seed: int, placement: Placement) -> dict[str, Any]:
    """The TRL config arguments both stages share: steps, learning rate, checkpoints, logging, device and dtype."""
    return {
        **placement.trl_args(),
        "output_dir": str(output_dir),
        "max_steps": stage.max_steps,
        "learning_rate": stage.learning_rate,
        "save_steps": stage.save_steps,
        "save_strategy": "steps",
        "logging_steps": stage.logging_steps,
        "seed": seed,
        "report_to": "none",
        "disable_tqdm": True,
    }


def load_start_model(
    policy: PolicyModel, model_dir: str | Path | None, placement: Placement | None = None
) -> tuple[Path, Any, Any]:
    """The start model's directory, model and tokenizer: ``model_dir``, else the model ``policy.model`` names.

    The weights load in ``placement.weight_dtype`` (default: ``policy``'s resolved placement):
    float32 when they train, the compute dtype under LoRA. The trainer moves them to the device.
    """
    from visioncreator.rl.train.models import load_policy_model, model_dir_for

    placement = placement or resolve_placement(policy)
    start = Path(model_dir) if model_dir is not None else model_dir_for(policy)
    dtype = placement.weight_dtype(trained=policy.lora is None)
    model, tokenizer = load_policy_model(start, torch_threads=policy.torch_threads, dtype=dtype)
    return start, model, tokenizer


def _save_final_model(
    trainer: Any, tokenizer: Any, output_dir: Path, train_metrics: Mapping[str, Any]
) -> tuple[Path, dict[str, float]]:
    from visioncreator.rl.train.models import save_policy_model

    accelerator = trainer.accelerator
    final = output_dir / MODEL_SUBDIR
    if accelerator.is_main_process:  # one writer under accelerate launch; the others wait for it
        save_policy_model(accelerator.unwrap_model(trainer.model), tokenizer, final)
    accelerator.wait_for_everyone()
    metrics = {k: float(v) for k, v in train_metrics.items() if isinstance(v, int | float)}
    return final, metrics


def train_and_save(trainer: Any, tokenizer: Any, output_dir: Path, resume: bool) -> tuple[Path, dict[str, float]]:
    """Train (resuming from the latest checkpoint in ``output_dir`` if asked), then save the model (LoRA merged).

    Returns:
        The final model directory, ``output_dir/model``, and the numeric train metrics.

    """
    output = _run_trainer(trainer, output_dir, resume)
    return _save_final_model(trainer, tokenizer, output_dir, output.metrics)
