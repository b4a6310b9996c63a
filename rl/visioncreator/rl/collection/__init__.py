"""Collect trajectories by replaying the graph: jobs, the collector, records, Ray workers.

- :mod:`~visioncreator.rl.collection.config`: :class:`CollectConfig`, how a collection runs;
- :mod:`~visioncreator.rl.collection.jobs`: one :class:`Job` per (task, sample), with deterministic ids;
- :mod:`~visioncreator.rl.collection.collector`: the :class:`Collector` that runs a job through the
  compiled graph and scores it, and :func:`synthetic_tools`;
- :mod:`~visioncreator.rl.collection.run`: :func:`collect` / :func:`collect_to`, jobs run concurrently;
- :mod:`~visioncreator.rl.collection.records`: :class:`TrajectoryRecord` JSONL files and datasets;
- :mod:`~visioncreator.rl.collection.pool`: the same collection on a pool of worker processes
  (:mod:`~visioncreator.rl.collection.pool_worker` is a worker's side), the CLI's default on more than one CPU;
- :mod:`~visioncreator.rl.collection.workers`: what the pool and Ray share (:class:`PolicySpec`, per-worker
  checkpoint files, routing a half-done trajectory back to its worker);
- :mod:`~visioncreator.rl.collection.ray`: the same collection on Ray actors (Ray loads when used);
- :mod:`~visioncreator.rl.collection.cli`: ``visioncreator collect`` (``python -m visioncreator.rl.collection``).
"""

from visioncreator.rl.collection.collector import CollectError, Collector, synthetic_tools
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.jobs import Job, plan_jobs
from visioncreator.rl.collection.pool import PoolSettings, ProcessWorkers, collect_pool, collect_pool_to
from visioncreator.rl.collection.ray import (
    PolicyFactory,
    PolicySpec,
    RayWorker,
    RayWorkers,
    checkpointed_threads,
    collect_ray,
    collect_ray_to,
    ensure_ray,
    worker_checkpoint,
)
from visioncreator.rl.collection.records import (
    JSON_COLUMNS,
    CollectTask,
    RecordsError,
    TrajectoryRecord,
    append_record,
    as_collect_task,
    group_id_for,
    policy_id_of,
    policy_info,
    read_records,
    record_from_row,
    records_dataset,
    repair_records,
    trajectory_id_for,
)
from visioncreator.rl.collection.run import RecordHandler, collect, collect_to, run_jobs

__all__ = [
    "JSON_COLUMNS",
    "CollectConfig",
    "CollectError",
    "CollectTask",
    "Collector",
    "Job",
    "PolicyFactory",
    "PolicySpec",
    "PoolSettings",
    "ProcessWorkers",
    "RayWorker",
    "RayWorkers",
    "RecordHandler",
    "RecordsError",
    "TrajectoryRecord",
    "append_record",
    "as_collect_task",
    "checkpointed_threads",
    "collect",
    "collect_pool",
    "collect_pool_to",
    "collect_ray",
    "collect_ray_to",
    "collect_to",
    "ensure_ray",
    "group_id_for",
    "plan_jobs",
    "policy_id_of",
    "policy_info",
    "read_records",
    "record_from_row",
    "records_dataset",
    "repair_records",
    "run_jobs",
    "synthetic_tools",
    "trajectory_id_for",
    "worker_checkpoint",
]
