"""Held-out evaluation of a model directory: :func:`evaluate` runs it through the graph and scores it.

:func:`~visioncreator.rl.train.stages.run_stages` evaluates before the first stage and after each
one; every point is an :class:`EvalPoint` (success rate, mean rewards, per-task success).

Heavy imports (torch, transformers) happen inside the local policy; importing this module stays light.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.rl.train.config import PolicyModel, TaskSource

if TYPE_CHECKING:
    from visioncreator.graph import ToolClient
    from visioncreator.policy import TransformersPolicy, TransformersVLMPolicy
    from visioncreator.rl.collection.config import CollectConfig
    from visioncreator.rl.collection.records import TrajectoryRecord

__all__ = ["EvalPoint", "Event", "ToolsFactory", "evaluate"]

Event = Callable[[dict[str, Any]], None]
"""Receives progress events: ``{"event": "stage_start" | "step" | "stage_end" | "stage_skip" | "eval", ...}``."""

ToolsFactory = Callable[["CollectConfig"], "ToolClient"]
"""Makes the (unconnected) tool client an evaluation runs on; default the collector's synthetic server."""


class EvalPoint(BaseModel):
    """The current model on the held-out tasks."""

    model_config = ConfigDict(extra="forbid")

    after: str = Field(description="'initial', or the stage directory name it follows.")
    model_dir: str
    n: int = Field(description="Trajectories evaluated (tasks x group size).")
    success_rate: float = Field(description="Fraction of trajectories whose outcome is a full success.")
    mean_reward: float = Field(description="Mean weighted total reward.")
    mean_rewards: dict[str, float] = Field(default_factory=dict, description="Mean of each reward.")
    per_task: dict[str, float] = Field(default_factory=dict, description="Task id -> success rate.")
    wall_s: float = 0.0
    tool_seed: int = Field(default=0, description="The synthetic server's seed the evaluation ran with.")
    records: str | None = Field(default=None, description="JSONL file of the evaluation's trajectories, if kept.")


def _policy(
    model_dir: str | Path, policy: PolicyModel, temperature: float, seed: int, store: Path
) -> TransformersPolicy | TransformersVLMPolicy:
    """``model_dir`` as a local policy, sampling as ``policy`` says at ``temperature``.

    A vision-language model directory is a :class:`~visioncreator.policy.TransformersVLMPolicy`
    shown the images of ``store`` (the evaluation then observes images).
    """
    from visioncreator.policy import LocalPolicySettings, TransformersPolicy, TransformersVLMPolicy
    from visioncreator.rl.train.device import process_device, resolve_placement
    from visioncreator.rl.train.models import is_vlm_dir
    from visioncreator.rl.train.rollout import StoreImages

    placement = resolve_placement(policy)  # evaluate where training runs (this process's GPU), in its dtype
    settings = LocalPolicySettings(
        device=process_device(placement),
        dtype=placement.dtype,
        temperature=temperature,
        top_p=policy.top_p,
        max_new_tokens=policy.max_new_tokens,
        torch_threads=policy.torch_threads,
        seed=seed,
    )
    if is_vlm_dir(model_dir):
        return TransformersVLMPolicy.load(model_dir, images=StoreImages(store), settings=settings)
    return TransformersPolicy(model_dir, settings=settings)


def _point(
    after: str, model_dir: str | Path, done: Sequence[TrajectoryRecord], started: float, **extra: Any
) -> EvalPoint:
    """The success rate and mean rewards of the evaluation's ``done`` records."""
    successes = [float(r.reward_details.get("outcome", {}).get("success", 0.0)) for r in done]
    per_task: dict[str, list[float]] = {}
    for record, success in zip(done, successes, strict=True):
        per_task.setdefault(record.task_id, []).append(success)
    names = sorted({k for r in done for k in r.rewards if k != "total"})
    return EvalPoint(
        after=after,
        model_dir=str(model_dir),
        n=len(done),
        success_rate=sum(successes) / len(done),
        mean_reward=sum(r.rewards.get("total", 0.0) for r in done) / len(done),
        mean_rewards={n: sum(r.rewards.get(n, 0.0) for r in done) / len(done) for n in names},
        per_task={k: sum(v) / len(v) for k, v in per_task.items()},
        wall_s=time.perf_counter() - started,
        **extra,
    )


def evaluate(
    model_dir: str | Path,
    tasks: TaskSource,
    *,
    policy: PolicyModel,
    store: str | Path,
    after: str = "initial",
    seed: int = 0,
    tool_seed: int = 0,
    group_size: int = 1,
    temperature: float = 0.0,
    max_turns: int = 12,
    max_format_retries: int = 2,
    tools: ToolsFactory | None = None,
    progress: Event | None = None,
    records: str | Path | None = None,
    concurrency: int = 8,
) -> EvalPoint:
    """Run ``model_dir`` as the policy on ``tasks`` through the graph and score every trajectory.

    Args:
        model_dir: The model to evaluate (a Hugging Face directory).
        tasks: The held-out tasks.
        policy: Sampling settings (``max_new_tokens``, ``top_p``, ``torch_threads``).
        store: Image store of the synthetic tool server.
        after: Label of the point (``initial`` or the stage directory name).
        seed: Run seed.
        tool_seed: The synthetic server's own seed (which faults it injects), independent of the policy.
        group_size: Samples per task.
        temperature: Sampling temperature of the evaluation (0: greedy).
        max_turns: Policy turns per task.
        max_format_retries: Consecutive unparseable turns before a task gives up.
        tools: Makes the tool client; default :func:`visioncreator.rl.collection.collector.synthetic_tools`.
        progress: Called with ``{"event": "eval_task", ...}`` as each trajectory finishes.
        records: Keep every trajectory in this JSONL file (appended as each finishes). Trajectories
            already in it are not run again (same ids: same model label, seeds and tasks), and the
            point is computed from every trajectory of this evaluation in the file.
        concurrency: Trajectories in flight at once (a local policy batches their turns).

    Returns:
        Success rate (the outcome reward's ``success``) and mean weighted reward.
    """
    from visioncreator.rl.collection.collector import synthetic_tools
    from visioncreator.rl.collection.config import CollectConfig
    from visioncreator.rl.collection.records import read_records
    from visioncreator.rl.collection.run import collect, collect_to
    from visioncreator.rl.train.models import is_vlm_dir
    from visioncreator.rl.train.tasks import load_tasks

    started = time.perf_counter()
    config = CollectConfig(
        group_size=group_size,
        concurrency=concurrency,
        observe="image" if is_vlm_dir(model_dir) else "inspect",
        seed=seed,
        tool_seed=tool_seed,
        fault_rate=tasks.fault_rate,
        store=Path(store),
        max_turns=max_turns,
        max_format_retries=max_format_retries,
    )
    model = _policy(model_dir, policy, temperature, seed, Path(store))

    def done(record: TrajectoryRecord) -> None:
        if progress is not None:
            success = record.reward_details.get("outcome", {}).get("success", 0.0)
            progress({"event": "eval_task", "after": after, "task": record.task_id, "success": success})

    todo = load_tasks(tasks)

    async def run() -> list[TrajectoryRecord]:
        async with (tools or synthetic_tools)(config) as client:
            if records is None:
                return await collect(todo, policy=model, tools=client, config=config, on_record=done)
            await collect_to(records, todo, policy=model, tools=client, config=config, on_record=done)
        wanted = {t.task_id for t in todo}
        return [r for r in read_records(records) if r.task_id in wanted and r.tool_seed == tool_seed]

    kept = None if records is None else str(records)
    return _point(after, model_dir, asyncio.run(run()), started, tool_seed=tool_seed, records=kept)
