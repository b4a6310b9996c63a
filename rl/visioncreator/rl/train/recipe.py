"""The RPCO recipe (VisionCreator-R1's staged training) as a :class:`~visioncreator.rl.train.config.TrainConfig`.

The paper trains its policy in three stages; here each is one stage of the config, run by
:func:`visioncreator.rl.train.stages.run_stages` (``visioncreator train rpco --config FILE``):

1. **Reflection RL on single images** (``01-grpo-reflect``): GRPO on ``single`` tasks, the
   reward weighted towards the reflection reward (:data:`REFLECTION_WEIGHTS`), per-node
   advantages on, so reflect tokens are credited by the reflection reward. Single-image
   trajectories are short, so reflection credit is least noisy there (the paper's finding:
   reflection learns poorly from long multi-image trajectories).
2. **SFT on selected trajectories** (``02-sft``): the union of reflection-strong ``single``
   trajectories (``Selection(splits=("single",), min_rewards={"reflection": 1.0})``) and
   planning-strong ``multi`` trajectories (``Selection(splits=("multi",),
   min_rewards={"plan": PLAN_STRONG})``), each also a full success. The trajectories are
   collected by the scripted expert with its error modes switched on (:data:`EXPERT_ERRORS`),
   so that the selections have something to reject; ``SFTStage.records`` points the stage at a
   records file instead (e.g. the stage-1 model's own rollouts, collected with
   ``visioncreator collect``).
3. **Multi-task RL** (``03-grpo-multi``): GRPO on every split with every reward at its default
   weight, per-node advantages on (plan tokens credited by the plan reward).

Every stage starts from the previous stage's final model. The step counts and group sizes
here are small defaults for one machine; a file (``configs/rpco.toml``) sets real ones.

No truncation: no stage sets a token limit. The SFT stage's ``max_length`` is its longest selected
example, and each GRPO stage's ``max_completion_length`` is derived from the expert's trajectories
on its tasks (:mod:`visioncreator.rl.train.lengths`), so no expert trajectory is cut and a rollout
longer than the limit is refused rather than cut.

No leakage: with ``eval_tasks``, every stage excludes the held-out tasks (the config adds their ids
to each stage's ``tasks.exclude_ids`` when it is validated) and a stage that names one in
``tasks.ids`` is refused.
"""

from __future__ import annotations

from pathlib import Path

from visioncreator.rl.train.config import (
    DEFAULT_WEIGHTS,
    GRPOStage,
    PolicyModel,
    Selection,
    SFTStage,
    Stage,
    TaskSource,
    TrainConfig,
)

__all__ = [
    "EXPERT_ERRORS",
    "PLAN_STRONG",
    "REFLECTION_WEIGHTS",
    "RPCO_STAGE_NAMES",
    "rpco_config",
    "rpco_stages",
]

REFLECTION_WEIGHTS: dict[str, float] = {
    "format": 0.1,
    "tool": 0.05,
    "result": 0.05,
    "plan": 0.05,
    "reflection": 0.5,
    "outcome": 0.25,
}
"""Stage 1's reward weights: reflection first, outcome second, the rest shaping."""

PLAN_STRONG = 1.0
"""Lowest plan reward of a planning-strong multi-image trajectory (stage 2)."""

EXPERT_ERRORS: dict[str, float] = {
    "skip_reflection_rate": 0.2,
    "accept_faulty_rate": 0.2,
    "over_reflect_rate": 0.1,
    "bad_plan_rate": 0.2,
}
"""ExpertConfig error rates for stage 2's collection, so that the selections have work to do."""

RPCO_STAGE_NAMES: tuple[str, str, str] = ("grpo-reflect", "sft", "grpo-multi")
"""The names of the three stages, in the paper's order."""


def rpco_stages(
    *,
    tasks: TaskSource | None = None,
    grpo_steps: int = 50,
    sft_steps: int = 100,
    num_generations: int = 4,
    sft_group_size: int = 2,
) -> tuple[Stage, ...]:
    """The three RPCO stages, in the paper's order.

    Args:
        tasks: The training tasks (suite, exclusions, fault rate); each stage narrows the splits.
            Default: the built-in synthetic suite.
        grpo_steps: Steps of each GRPO stage.
        sft_steps: Steps of the SFT stage.
        num_generations: GRPO group size.
        sft_group_size: Expert samples per task when collecting stage 2's trajectories.

    """
    base = tasks or TaskSource()
    single = base.model_copy(update={"splits": ("single",)})
    single_multi = base.model_copy(update={"splits": ("single", "multi")})
    reflect = GRPOStage(
        name=RPCO_STAGE_NAMES[0],
        tasks=single,
        num_generations=num_generations,
        max_steps=grpo_steps,
        rewards=dict(REFLECTION_WEIGHTS),
        per_node_advantages=True,
    )
    sft = SFTStage(
        name=RPCO_STAGE_NAMES[1],
        tasks=single_multi,
        group_size=sft_group_size,
        expert=dict(EXPERT_ERRORS),
        select=(
            Selection(splits=("single",), min_rewards={"reflection": 1.0}),
            Selection(splits=("multi",), min_rewards={"plan": PLAN_STRONG}),
        ),
        max_steps=sft_steps,
    )
    multi = GRPOStage(
        name=RPCO_STAGE_NAMES[2],
        tasks=base,
        num_generations=num_generations,
        max_steps=grpo_steps,
        rewards=dict(DEFAULT_WEIGHTS),
        per_node_advantages=True,
    )
    return (reflect, sft, multi)


def rpco_config(
    policy: PolicyModel | str,
    output_dir: str | Path,
    *,
    tasks: TaskSource | None = None,
    eval_tasks: TaskSource | None = None,
    seed: int = 0,
    grpo_steps: int = 50,
    sft_steps: int = 100,
    num_generations: int = 4,
) -> TrainConfig:
    """A whole RPCO run: :func:`rpco_stages` for ``policy``, writing into ``output_dir``.

    Args:
        policy: The model (``tiny``, ``smollm2``, a directory) or its full :class:`PolicyModel`.
        output_dir: Where the stages write (``01-grpo-reflect``, ``02-sft``, ``03-grpo-multi``).
        tasks: Training tasks (see :func:`rpco_stages`).
        eval_tasks: Held-out tasks evaluated before and after every stage (None: no evaluation);
            every stage excludes them.
        seed: Training and rollout seed.
        grpo_steps: Steps of each GRPO stage.
        sft_steps: Steps of the SFT stage.
        num_generations: GRPO group size.

    """
    model = policy if isinstance(policy, PolicyModel) else PolicyModel(model=policy)
    stages = rpco_stages(tasks=tasks, grpo_steps=grpo_steps, sft_steps=sft_steps, num_generations=num_generations)
    return TrainConfig(policy=model, output_dir=str(output_dir), seed=seed, stages=stages, eval_tasks=eval_tasks)
