"""The jobs of a collection: one per (task, sample), task-major, with deterministic trajectory and group ids.

Sample ``i`` of a task runs with seed ``config.seed + i``; the ids depend on the task, the seeds and
the policy, so a re-run plans exactly the same jobs. The base of a job's image-call seeds
(:mod:`visioncreator.graph.seeds`) is shared by the whole group when ``config.call_seeds`` is
``shared`` (common random numbers), else its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.records import CollectTask, as_collect_task, group_id_for, trajectory_id_for

__all__ = ["Job", "call_seed_base_for", "plan_jobs"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One trajectory to collect."""

    task: CollectTask
    task_index: int
    sample_index: int
    seed: int
    trajectory_id: str
    group_id: str
    call_seed_base: int
    """Base of the image calls' seeds (the same for every member of a group with shared call seeds)."""


def call_seed_base_for(task: CollectTask, config: CollectConfig, group: int, sample_index: int) -> int:
    """The image-call seed base of one job.

    A function of the task, its group (the task's index in the collection), the collection seed (a
    GRPO rollout's generation step) and, unless the group shares its seeds, the sample.
    """
    member = sample_index if config.call_seeds != "shared" else "group"
    parts = ["call-seed-base", task.model_dump_json(), str(config.seed), str(group), str(member)]
    data = "\x1f".join(parts).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") % (2**31 - 1)


def plan_jobs(tasks: Iterable[Any], config: CollectConfig, policy_id: str) -> list[Job]:
    """Every (task, sample) of a collection, task-major, with its deterministic ids."""
    jobs: list[Job] = []
    for t, raw in enumerate(tasks):
        task = as_collect_task(raw)
        group = group_id_for(task, seed=config.seed, tool_seed=config.tool_seed, policy_id=policy_id)
        for i in range(config.group_size):
            tid = trajectory_id_for(
                task, sample_index=i, seed=config.seed, tool_seed=config.tool_seed, policy_id=policy_id,
                branch=config.branch_key(),
            )  # fmt: skip
            jobs.append(
                Job(
                    task=task, task_index=t, sample_index=i, seed=config.seed + i, trajectory_id=tid, group_id=group,
                    call_seed_base=call_seed_base_for(task, config, t, i),
                )
            )  # fmt: skip
    return jobs
