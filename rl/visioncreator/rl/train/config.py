"""Training configuration: the policy, the stages (SFT or GRPO) and what each reads, as one file.

``visioncreator train sft|grpo|rpco --config FILE`` reads a :class:`TrainConfig` from TOML or
JSON. The RPCO recipe (:mod:`visioncreator.rl.train.recipe`) is one such configuration.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visioncreator.policy import Split
from visioncreator.rl.errors import RLError
from visioncreator.rl.train.served import ServedRollouts

__all__ = [
    "ConfigError",
    "GRPOStage",
    "LoraSpec",
    "PolicyModel",
    "SFTStage",
    "Selection",
    "Stage",
    "TaskSource",
    "TrainConfig",
    "eval_task_ids",
    "load_train_config",
]


DEFAULT_WEIGHTS: dict[str, float] = {
    "format": 0.1,
    "tool": 0.1,
    "result": 0.1,
    "plan": 0.1,
    "reflection": 0.1,
    "outcome": 0.5,
}
"""The default reward weights (those of :class:`visioncreator.rl.RewardWeights`)."""


class ConfigError(RLError, ValueError):
    """A training configuration file that cannot be read or is invalid (the message names the file)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Model):
    """LoRA adapters (peft) instead of full fine-tuning."""

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"


class PolicyModel(_Model):
    """The model being trained, and how it writes turns during rollouts."""

    model: str = Field(
        description="`tiny` (a random Qwen2 built on the spot), `tiny-vlm` (a random Idefics3 VLM built on the spot), "
        "`smollm2` (the packaged SmolLM2-135M-Instruct) "
        "or a model directory (a previous stage's output included)."
    )
    lora: LoraSpec | None = None
    max_new_tokens: int = Field(default=256, ge=1, description="Most tokens per policy turn in rollouts.")
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    torch_threads: int | None = Field(default=None, ge=1, description="torch.set_num_threads (None: leave it).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where training runs: auto is cuda when torch sees a GPU, else cpu (under accelerate launch, "
        "each process's own GPU). cuda without a GPU is refused by name.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="Compute precision: auto is bfloat16 on a GPU that has it (else float16), float32 on the CPU. "
        "Trained weights stay float32 (mixed precision); frozen LoRA base weights load in this dtype.",
    )


class TaskSource(_Model):
    """Which tasks a stage runs on."""

    suite: str | None = Field(default=None, description="Suite JSONL file; None is the built-in synthetic suite.")
    splits: tuple[Split, ...] = ("single", "multi", "img2img")
    ids: tuple[str, ...] = Field(default=(), description="Only these task ids (empty: all of the splits).")
    exclude_ids: tuple[str, ...] = Field(default=(), description="Never these task ids (held-out tasks).")
    limit: int | None = Field(default=None, ge=1, description="At most this many tasks, in file order.")
    fault_rate: float = Field(default=0.3, ge=0.0, le=1.0, description="Synthetic fault injection rate.")


class Selection(_Model):
    """A filter over collected trajectories; a trajectory is kept when every condition holds."""

    splits: tuple[Split, ...] = ()
    """Only these splits (empty: any)."""
    min_rewards: dict[str, float] = Field(default_factory=dict)
    """Reward name -> lowest value kept, e.g. ``{"reflection": 1.0}`` for reflection-strong trajectories."""
    require_success: bool = True
    """Keep only trajectories whose outcome is a full success."""
    limit: int | None = Field(default=None, ge=1)
    """At most this many trajectories from this selection."""


class SFTStage(_Model):
    """Supervised fine-tuning on selected trajectories (TRL ``SFTTrainer``, loss on policy turns only)."""

    kind: Literal["sft"] = "sft"
    name: str = "sft"
    records: str | None = Field(
        default=None, description="Trajectory records (JSONL) to learn from; None collects them with the expert."
    )
    tasks: TaskSource = Field(default_factory=TaskSource, description="Tasks the expert runs when collecting.")
    group_size: int = Field(default=1, ge=1, description="Expert samples per task when collecting.")
    expert: dict[str, Any] = Field(default_factory=dict, description="ExpertConfig fields for collection.")
    select: tuple[Selection, ...] = (Selection(),)
    """The union of these selections is the training set."""
    max_steps: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=2e-5, gt=0.0)
    batch_size: int = Field(default=2, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int | None = Field(default=None, ge=16)
    """Most tokens of one example (prompt and completion). Longer examples are dropped, counted in the
    stage's metrics (``dropped_too_long``) and logged, never cut. None: the longest selected example,
    rounded up to a multiple of 64 (nothing dropped)."""
    save_steps: int = Field(default=50, ge=1)
    logging_steps: int = Field(default=1, ge=1)
    trl: dict[str, Any] = Field(default_factory=dict, description="Extra ``SFTConfig`` fields, passed through.")


class GRPOStage(_Model):
    """GRPO by replaying the graph (TRL ``GRPOTrainer``); the loss sees the recorded token ids and masks."""

    kind: Literal["grpo"] = "grpo"
    name: str = "grpo"
    tasks: TaskSource = Field(default_factory=TaskSource)
    num_generations: int = Field(default=4, ge=2, description="Samples per task: the GRPO group.")
    groups_per_step: int = Field(
        default=2,
        ge=1,
        description="Groups (tasks) per optimiser step, over all processes: each step's gradient averages "
        "groups_per_step * num_generations rollouts. With several processes, a multiple of their number "
        "(every process rolls out whole groups).",
    )
    max_steps: int = Field(default=50, ge=1, description="Optimiser steps (num_iterations of them per rollout batch).")
    learning_rate: float = Field(default=1e-5, gt=0.0)
    beta: float = Field(
        default=0.04,
        ge=0.0,
        description="KL coefficient to the start model (0: no anchor). With LoRA the reference is the start "
        "model with the adapters switched off (no copy); full fine-tuning keeps a frozen copy.",
    )
    num_iterations: int = Field(
        default=1,
        ge=1,
        description="Optimiser steps per rollout batch (GRPO's mu): above 1 the batch is reused, the importance "
        "ratio to the rollout's model leaves 1 and the clipping (epsilon) acts.",
    )
    epsilon: float = Field(default=0.2, gt=0.0, lt=1.0, description="PPO clip range of the importance ratio.")
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Rollouts per forward/backward pass on one process (a memory knob; gradients accumulate "
        "to the whole step). None: the process's whole share of a step.",
    )
    rewards: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="Reward name -> weight (the names of visioncreator.rl.REWARDS).",
    )
    per_node_advantages: bool = Field(
        default=False, description="Credit plan tokens by plan rewards and reflect tokens by the reflection reward."
    )
    node_rewards: dict[str, list[str]] = Field(
        default_factory=lambda: {"plan": ["plan", "format"], "reflect": ["reflection", "format"]},
        description="With per-node advantages: node -> the rewards that credit its tokens (others: the total).",
    )
    credit: Literal["sample", "per_node", "per_turn"] | None = Field(
        default=None,
        description="Which tokens get which advantage: sample (every token the total's), per_node (tokens of a node "
        "named in node_rewards get those rewards'), per_turn (image calls their image's credit, each reflect turn "
        "its own verdicts', see visioncreator.rl.credit). None: per_node if per_node_advantages, else sample.",
    )
    credit_local_weight: float = Field(
        default=0.5, ge=0.0, le=1.0, description="With per_turn credit: weight of the call's or turn's own score."
    )
    call_seeds: Literal["shared", "independent", "policy"] = Field(
        default="shared",
        description="Image-call seeds of a group (CollectConfig.call_seeds): shared gives every member the same tool "
        "randomness (common random numbers).",
    )
    branch_at: Literal["reflect"] | None = Field(
        default=None,
        description="Branched groups: every group is continuations of one base rollout forked where this node runs "
        "next (its first such point); samples hold the continuations' own turns.",
    )
    max_turns: int = Field(default=12, ge=1, description="Policy turns per rollout.")
    observe: Literal["inspect", "image", "both"] = Field(
        default="inspect",
        description="How rollouts show the policy a new image (AgentConfig.observe): image/both need a vision-language "
        "policy model, whose forward passes then see the images (visioncreator.rl.train.vlm).",
    )
    max_completion_length: int | None = Field(
        default=None,
        ge=16,
        description="Most tokens of one whole trajectory after its prompt; a longer rollout is refused (no loss), "
        "not cut. None: derived from the expert's trajectories on the stage's tasks with the stage's tokenizer "
        "(visioncreator.rl.train.lengths.derive_max_completion_length: the longest times 1.25, rounded up to 64).",
    )
    save_steps: int = Field(default=10, ge=1)
    logging_steps: int = Field(default=1, ge=1)
    trl: dict[str, Any] = Field(default_factory=dict, description="Extra ``GRPOConfig`` fields, passed through.")
    # -- served rollouts (visioncreator.rl.train.served) --
    rollouts: Literal["local", "served"] = Field(
        default="local",
        description="Who writes the rollouts' turns: a local transformers policy over the trainer's model, or the "
        "vLLM server with the trainer's LoRA adapter synced after every optimiser step (needs policy.lora).",
    )
    served: ServedRollouts = Field(default_factory=ServedRollouts, description="The server, with rollouts='served'.")

    @model_validator(mode="after")
    def _batch_divides_step(self) -> GRPOStage:
        step = self.groups_per_step * self.num_generations
        if self.batch_size is not None and step % self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} must divide the rollouts of one step, groups_per_step * "
                f"num_generations = {self.groups_per_step} * {self.num_generations} = {step}"
            )
        return self

    @model_validator(mode="after")
    def _known_rewards(self) -> GRPOStage:
        known = {"format", "tool", "result", "plan", "reflection", "outcome"}
        unknown = (set(self.rewards) | {r for names in self.node_rewards.values() for r in names}) - known
        if unknown:
            raise ValueError(f"unknown reward names {sorted(unknown)}; known: {sorted(known)}")
        if any(w < 0 for w in self.rewards.values()) or sum(self.rewards.values()) <= 0:
            raise ValueError("reward weights must be non-negative with a positive sum")
        return self


Stage = Annotated[SFTStage | GRPOStage, Field(discriminator="kind")]


class TrainConfig(_Model):
    """A whole training run: one policy through one or more stages, each starting from the previous one."""

    policy: PolicyModel
    output_dir: str = Field(description="Each stage writes OUTPUT_DIR/NN-NAME/ (checkpoints, final model, logs).")
    seed: int = 0
    stages: tuple[Stage, ...] = Field(min_length=1)
    eval_tasks: TaskSource | None = Field(
        default=None,
        description="Held-out tasks whose success rate is measured before and after every stage. Every stage "
        "excludes them (their ids join its tasks.exclude_ids when the config is validated); a stage whose "
        "tasks.ids names one is refused.",
    )
    eval_group_size: int = Field(default=1, ge=1, description="Samples per held-out task.")
    eval_temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature of evaluations (0: greedy).")
    eval_max_turns: int = Field(default=12, ge=1, description="Policy turns per held-out task.")

    @model_validator(mode="before")
    @classmethod
    def _hold_out_eval_tasks(cls, data: Any) -> Any:
        """Every stage excludes the held-out tasks; a stage that names one in ``tasks.ids`` is refused."""
        if not isinstance(data, dict) or data.get("eval_tasks") is None:
            return data
        stages = data.get("stages")
        try:
            held_out = eval_task_ids(TaskSource.model_validate(data["eval_tasks"]))
        except ValidationError:
            return data  # the eval_tasks field's own validation names the problem
        if not held_out or not isinstance(stages, list | tuple):
            return data
        return {**data, "stages": [_without(stage, i, held_out) for i, stage in enumerate(stages)]}


def eval_task_ids(source: TaskSource) -> tuple[str, ...]:
    """The ids of the tasks ``source`` names in its suite (the held-out tasks when it is ``eval_tasks``).

    Raises:
        ValueError: The suite cannot be read (the message names it).

    """
    from visioncreator.evals import SuiteError, load_suite

    try:
        suite = load_suite(source.suite)
    except SuiteError as exc:
        raise ValueError(f"eval_tasks: cannot read suite {source.suite}: {exc}") from exc
    wanted, excluded = set(source.ids), set(source.exclude_ids)
    ids = [t.id for t in suite if t.split in source.splits and (not wanted or t.id in wanted) and t.id not in excluded]
    return tuple(ids[: source.limit])


def _without(stage: Any, index: int, held_out: tuple[str, ...]) -> Any:
    """A stage's raw data with the held-out ids added to its ``tasks.exclude_ids``."""
    raw = stage.model_dump() if isinstance(stage, BaseModel) else stage
    if not isinstance(raw, dict):
        return stage  # the stages field's own validation names the problem
    try:
        tasks = TaskSource.model_validate(raw.get("tasks", {}))
    except ValidationError:
        return stage
    overlap = [i for i in tasks.ids if i in set(held_out)]
    if overlap:
        raise ValueError(
            f"stages.{index} ({raw.get('name', raw.get('kind', '?'))!r}) trains on held-out eval_tasks {overlap}: "
            "remove them from its tasks.ids (stages never train on the held-out tasks)"
        )
    exclude = tuple(dict.fromkeys((*tasks.exclude_ids, *held_out)))
    return {**raw, "tasks": tasks.model_copy(update={"exclude_ids": exclude})}


def load_train_config(path: str | Path, *, default_stages: Sequence[SFTStage | GRPOStage] | None = None) -> TrainConfig:
    """Read a :class:`TrainConfig` from a ``.toml`` or ``.json`` file.

    Args:
        path: The file.
        default_stages: Stages to use when the file has no ``stages`` (the ``rpco`` verb passes
            the RPCO recipe's); None requires the file to give them.

    Raises:
        ConfigError: The file is missing, unparseable, or invalid; the message names the file
            and the offending fields.

    """
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the training config: {exc}") from exc
    try:
        data: Any = tomllib.loads(text) if file.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file}: not valid {file.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if isinstance(data, dict) and "stages" not in data and default_stages is not None:
        data = {**data, "stages": [s.model_dump() for s in default_stages]}
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{file}: invalid training config: {fields}") from exc
