"""The jobs of a collection: one per (task, sample), task-major, with deterministic trajectory and group ids.

Sample ``i`` of a task runs with seed ``config.seed + i``; the ids depend on the task, the seeds and
the policy, so a re-run plans exactly the same jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.records import CollectTask, as_collect_task, group_id_for, trajectory_id_for

__all__ = ["Job", "plan_jobs"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One trajectory to collect."""

    task: CollectTask
    task_index: int
    sample_index: int
    seed: int
    trajectory_id: str
    group_id: str


def plan_jobs(tasks: Iterable[Any], config: CollectConfig, policy_id: str) -> list[Job]:
    """Every (task, sample) of a collection, task-major, with its deterministic ids."""
    jobs: list[Job] = []
    for t, raw in enumerate(tasks):
        task = as_collect_task(raw)
        group = group_id_for(task, seed=config.seed, tool_seed=config.tool_seed, policy_id=policy_id)
        for i in range(config.group_size):
            tid = trajectory_id_for(
                task, sample_index=i, seed=config.seed, tool_seed=config.tool_seed, policy_id=policy_id
            )
            jobs.append(
                Job(task=task, task_index=t, sample_index=i, seed=config.seed + i, trajectory_id=tid, group_id=group)
            )
    return jobs
