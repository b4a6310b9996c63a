"""Train the policy with TRL: SFT and GRPO stages, run in sequence with held-out evaluation (RPCO).

- :mod:`~visioncreator.rl.train.config`: :class:`TrainConfig`, the policy and its stages, from one file;
- :mod:`~visioncreator.rl.train.recipe`: the RPCO recipe's three stages (:func:`rpco_config`);
- :mod:`~visioncreator.rl.train.models`: where the policy model comes from, LoRA, how it is saved;
- :mod:`~visioncreator.rl.train.selection`: which trajectories SFT learns from;
- :mod:`~visioncreator.rl.train.lengths`: trajectory lengths in tokens, the limits derived from them,
  and refusing (not cutting) what is longer;
- :mod:`~visioncreator.rl.train.device`: where training runs and in which precision (:func:`resolve_placement`);
- :mod:`~visioncreator.rl.train.harness`: what both trainers share (:class:`StageResult`);
- :mod:`~visioncreator.rl.train.sft` and :mod:`~visioncreator.rl.train.grpo`: :func:`train_sft` and
  :func:`train_grpo`, one stage each;
- :mod:`~visioncreator.rl.train.rollout`: GRPO generation by replaying the graph (:class:`GraphRollout`);
- :mod:`~visioncreator.rl.train.served`: rollouts from the vLLM server, LoRA synced per step, on Ray if asked;
- :mod:`~visioncreator.rl.train.evaluation` and :mod:`~visioncreator.rl.train.stages`: held-out
  :func:`evaluate`, and :func:`run_stages`;
- :mod:`~visioncreator.rl.train.significance`: 95% intervals of a success rate and paired tests of
  two models (exact McNemar, paired bootstrap);
- :mod:`~visioncreator.rl.train.tiny_vlm`: a tiny random VLM for tests of the image path;
- :mod:`~visioncreator.rl.train.scratch`: a random model with a tokenizer trained on the trajectories it
  will learn, the starting point where no pretrained model can travel (:func:`build_scratch_model`);
- :mod:`~visioncreator.rl.train.cli`: ``visioncreator train`` (``python -m visioncreator.rl.train``).

Importing this package loads no torch, transformers, TRL or datasets. Two modules import TRL and
torch when imported, so they are not re-exported here: :mod:`visioncreator.rl.train.trainer`
(``GraphGRPOTrainer``, the GRPO trainer ``train_grpo`` uses) and :mod:`visioncreator.rl.train.vlm`
(``TrajectoryImagesGRPOTrainer``, mid-trajectory images for VLM policies).
"""

from visioncreator.rl.train.config import (
    ConfigError,
    GRPOStage,
    LoraSpec,
    PolicyModel,
    Selection,
    SFTStage,
    Stage,
    TaskSource,
    TrainConfig,
    load_train_config,
)
from visioncreator.rl.train.device import (
    Placement,
    is_main_process,
    main_process_first,
    process_count,
    process_device,
    resolve_placement,
)
from visioncreator.rl.train.evaluation import EvalPoint, Event, ToolsFactory, evaluate
from visioncreator.rl.train.grpo import Batching, batching, build_grpo_trainer, train_grpo
from visioncreator.rl.train.harness import Progress, StageResult, TrainingError
from visioncreator.rl.train.lengths import (
    LengthReport,
    derive_max_completion_length,
    expert_lengths,
    fits,
    refuse,
    refuse_overlong,
    trajectory_lengths,
    with_completion_limit,
)
from visioncreator.rl.train.models import (
    ModelError,
    default_cache_dir,
    load_policy_model,
    lora_config,
    model_dir_for,
    save_policy_model,
)
from visioncreator.rl.train.recipe import (
    EXPERT_ERRORS,
    PLAN_STRONG,
    REFLECTION_WEIGHTS,
    RPCO_STAGE_NAMES,
    rpco_config,
    rpco_stages,
)
from visioncreator.rl.train.rollout import (
    GraphRollout,
    Observe,
    RolloutSample,
    images_seen,
    load_tasks,
    reward_functions,
    sample_of,
    task_of_prompt,
    task_prompt,
)
from visioncreator.rl.train.scratch import SIZES, ScratchSize, build_scratch_model, conversation_texts, parameter_count
from visioncreator.rl.train.selection import select_trajectories
from visioncreator.rl.train.served import RayCollect, ServedPolicy, ServedRollouts, ServedRolloutsError, ServedSession
from visioncreator.rl.train.sft import train_sft
from visioncreator.rl.train.significance import (
    McNemarResult,
    PairedDifference,
    bootstrap_interval,
    mcnemar_exact,
    paired_bootstrap,
    wilson_interval,
)
from visioncreator.rl.train.stages import (
    Curves,
    RunSummary,
    StageCurve,
    StageRecord,
    curve_steps,
    run_stages,
    stage_dir,
)
from visioncreator.rl.train.tiny_vlm import IMAGE_TOKEN, TinyVLM, build_tiny_vlm

__all__ = [
    "EXPERT_ERRORS",
    "IMAGE_TOKEN",
    "PLAN_STRONG",
    "REFLECTION_WEIGHTS",
    "RPCO_STAGE_NAMES",
    "SIZES",
    "Batching",
    "ConfigError",
    "Curves",
    "EvalPoint",
    "Event",
    "GRPOStage",
    "GraphRollout",
    "LengthReport",
    "LoraSpec",
    "McNemarResult",
    "ModelError",
    "Observe",
    "PairedDifference",
    "Placement",
    "PolicyModel",
    "Progress",
    "RayCollect",
    "RolloutSample",
    "RunSummary",
    "SFTStage",
    "ScratchSize",
    "Selection",
    "ServedPolicy",
    "ServedRollouts",
    "ServedRolloutsError",
    "ServedSession",
    "Stage",
    "StageCurve",
    "StageRecord",
    "StageResult",
    "TaskSource",
    "TinyVLM",
    "ToolsFactory",
    "TrainConfig",
    "TrainingError",
    "batching",
    "bootstrap_interval",
    "build_grpo_trainer",
    "build_scratch_model",
    "build_tiny_vlm",
    "conversation_texts",
    "curve_steps",
    "default_cache_dir",
    "derive_max_completion_length",
    "evaluate",
    "expert_lengths",
    "fits",
    "images_seen",
    "is_main_process",
    "load_policy_model",
    "load_tasks",
    "load_train_config",
    "lora_config",
    "main_process_first",
    "mcnemar_exact",
    "model_dir_for",
    "paired_bootstrap",
    "parameter_count",
    "process_count",
    "process_device",
    "refuse",
    "refuse_overlong",
    "resolve_placement",
    "reward_functions",
    "rpco_config",
    "rpco_stages",
    "run_stages",
    "sample_of",
    "save_policy_model",
    "select_trajectories",
    "stage_dir",
    "task_of_prompt",
    "task_prompt",
    "train_grpo",
    "train_sft",
    "trajectory_lengths",
    "wilson_interval",
    "with_completion_limit",
]
