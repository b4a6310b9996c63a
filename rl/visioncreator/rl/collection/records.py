"""Trajectory records for RL: one JSON line per finished trajectory, crash-safe, loadable as a dataset.

A :class:`TrajectoryRecord` is the graph's :class:`~visioncreator.graph.trajectory.Trajectory`
plus what training needs: deterministic ids (so a re-run collection skips what it already has),
the group it belongs to, the policy that wrote it, the task's checklist and input scenes (the
rewards' context) and the rewards themselves. Images stay in the image store, named by handle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.graph import JsonlError, Trajectory, append_jsonl, read_jsonl, repair_jsonl, thread_id_for
from visioncreator.policy import Policy, Task
from visioncreator.rl.errors import RLError
from visioncreator.rl.rewards.base import RewardContext
from visioncreator.rl.rewards.scoring import RewardWeights, score
from visioncreator.tool_servers import TextToImageInput
from visioncreator.tool_servers.synthetic import CheckItem, Scene

__all__ = [
    "JSON_COLUMNS",
    "CollectTask",
    "RecordsError",
    "TrajectoryRecord",
    "append_record",
    "as_collect_task",
    "group_id_for",
    "policy_id_of",
    "policy_info",
    "read_records",
    "record_from_row",
    "records_dataset",
    "repair_records",
    "trajectory_id_for",
]

JSON_COLUMNS: tuple[str, ...] = (
    "task",
    "config",
    "messages",
    "turns",
    "tool_calls",
    "plan",
    "truths",
    "policy",
    "checklist",
    "input_scenes",
    "rewards",
    "branch",
    "reward_details",
)
"""Columns :func:`records_dataset` stores as JSON strings: nested values whose shape varies from
row to row (tool arguments, handle-keyed truths, per-reward details), which Arrow cannot type as
one struct. Every other column is a plain Arrow type (strings, integers, ``answer`` a list of
strings, ``timings`` a struct of floats)."""


class RecordsError(RLError, ValueError):
    """A records file with a corrupt line before its last one (the message names file and line)."""


class CollectTask(BaseModel):
    """One task to collect: the agent's task, its checklist, and input images to render first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Task
    checklist: tuple[CheckItem, ...] = ()
    inputs: tuple[TextToImageInput, ...] = Field(
        default=(),
        description="Input images rendered (faults off) into the shared store before the run; their handles "
        "become the task's inputs (img2img suites describe inputs this way).",
    )

    @property
    def task_id(self) -> str:
        """The task's own id, else one derived from its content."""
        if self.task.id:
            return self.task.id
        return "task_" + hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def as_collect_task(task: CollectTask | Task | Mapping[str, Any] | Any) -> CollectTask:
    """A :class:`CollectTask` from itself, a bare ``Task``, or a suite task (``SuiteTask`` or its JSON dict)."""
    if isinstance(task, CollectTask):
        return task
    if isinstance(task, Task):
        return CollectTask(task=task)
    get: Callable[[str, Any], Any]
    if isinstance(task, Mapping):
        get = task.get
    else:

        def get(name: str, default: Any) -> Any:
            return getattr(task, name, default)

    if get("request", None) is None:
        raise TypeError(f"cannot collect {type(task).__name__}: expected a Task, CollectTask or suite task")
    inputs = tuple(_rendered_input(i) for i in get("inputs", ()))
    agent_task = Task(
        request=get("request", None), n_images=get("n_images", 1), split=get("split", "single"), id=get("id", None)
    )
    checklist = tuple(c if isinstance(c, CheckItem) else CheckItem.model_validate(c) for c in get("checklist", ()))
    return CollectTask(task=agent_task, checklist=checklist, inputs=inputs)


def _rendered_input(image: Mapping[str, Any] | Any) -> TextToImageInput:
    """A suite input image as the text-to-image call that renders it (suite inputs given as files are refused)."""
    data = dict(image) if isinstance(image, Mapping) else image.model_dump()
    path = data.pop("path", None)
    if path is not None:
        raise TypeError(
            f"input image file {path!r}: the collector renders input images in the synthetic environment "
            "(ground truth is needed for rewards); give inputs as prompts"
        )
    return TextToImageInput.model_validate({k: v for k, v in data.items() if v is not None})


_SECRET_WORDS = ("key", "token", "secret", "password")


def policy_info(policy: Policy) -> dict[str, Any]:
    """The policy's name, model and settings (secrets left out), as recorded with each trajectory."""
    settings: Any = getattr(policy, "settings", None) or getattr(policy, "config", None)
    if isinstance(settings, BaseModel):
        values = settings.model_dump(mode="json")
    elif dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        values = dataclasses.asdict(settings)
    else:
        values = {}
    values = {k: v for k, v in json.loads(json.dumps(values, default=str)).items() if not _secret(k)}
    model = getattr(policy, "model_dir", None) or values.get("model") or policy.name
    return {"name": policy.name, "model": str(model), "settings": values}


def _secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def policy_id_of(info: Mapping[str, Any]) -> str:
    """``pol_`` + 16 hex digits of SHA-256 over the policy info."""
    return "pol_" + hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def trajectory_id_for(
    task: CollectTask, *, sample_index: int, seed: int, tool_seed: int, policy_id: str, branch: str = ""
) -> str:
    """The trajectory's id, which is also its checkpoint thread.

    It is :func:`visioncreator.graph.thread_id_for` of the task and seed, scoped by the rest of the
    collect task (checklist, input images), the sample index, the tool seed, the policy id and,
    for branched rollouts, where the group branches (``CollectConfig.branch_key()``).
    """
    context = task.model_dump_json(exclude={"task"})
    scope = (branch,) if branch else ()
    return thread_id_for(task.task, seed, context, sample_index, tool_seed, policy_id, *scope)


def group_id_for(task: CollectTask, *, seed: int, tool_seed: int, policy_id: str) -> str:
    """The id every sample of ``task`` shares in one collection (base seed, tool seed and policy fixed)."""
    return "grp_" + _digest(task.model_dump_json(), seed, tool_seed, policy_id)


class TrajectoryRecord(Trajectory):
    """A trajectory with its collection identity, reward context and rewards."""

    trajectory_id: str = Field(description="Deterministic: see :func:`trajectory_id_for`.")
    task_id: str
    group_id: str = Field(description="Shared by all samples of one task in one collection (the GRPO group).")
    sample_index: int = Field(ge=0, description="Index of this sample within its group.")
    tool_seed: int = Field(default=0, description="The synthetic tool server's seed (its own randomness).")
    policy: dict[str, Any] = Field(default_factory=dict, description="Policy name, model and settings.")
    checklist: tuple[CheckItem, ...] = Field(default=(), description="The task's checklist.")
    input_scenes: tuple[Scene, ...] = Field(default=(), description="Ground-truth scenes of the input images.")
    rewards: dict[str, float] = Field(default_factory=dict, description="Reward name -> value, plus 'total'.")
    reward_details: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Reward name -> details.")

    def reward_context(self) -> RewardContext:
        """What the rewards need besides the trajectory: the checklist and input scenes."""
        return RewardContext(checklist=self.checklist, input_scenes=self.input_scenes)

    def scored(self, weights: Mapping[str, float] | None = None) -> TrajectoryRecord:
        """A copy with ``rewards`` and ``reward_details`` filled by :func:`visioncreator.rl.score`.

        Args:
            weights: Reward name -> weight (missing names weigh 0); ``None`` takes the defaults.

        """
        if weights is None:
            reward_weights = RewardWeights()
        else:
            reward_weights = RewardWeights(**{name: float(weights.get(name, 0.0)) for name in _WEIGHT_NAMES})
        result = score(self, self.reward_context(), reward_weights)
        rewards = {name: r.value for name, r in result.components.items()} | {"total": result.total}
        # Details go through JSON so that the record holds plain values only (tuples become lists).
        details = json.loads(json.dumps({n: r.details for n, r in result.components.items()}, default=str))
        return self.model_copy(update={"rewards": rewards, "reward_details": details})


_WEIGHT_NAMES = tuple(RewardWeights.__dataclass_fields__)


def append_record(path: str | Path, record: TrajectoryRecord) -> None:
    """Append ``record`` as one JSON line, flushed and fsynced before returning."""
    append_jsonl(path, record)


def read_records(path: str | Path) -> list[TrajectoryRecord]:
    """Every record of a JSONL file, in file order; a missing file has none.

    A last line that does not parse (a write torn by a crash) is dropped.

    Raises:
        RecordsError: A line before the last one does not parse; the message names the line.

    """
    try:
        return read_jsonl(path, TrajectoryRecord)
    except JsonlError as exc:
        raise RecordsError(str(exc)) from exc


def repair_records(path: str | Path) -> list[TrajectoryRecord]:
    """Cut a torn last line off the file (so appends start on a fresh line) and return its records.

    Raises:
        RecordsError: A line before the last one does not parse.

    """
    try:
        return repair_jsonl(path, TrajectoryRecord)
    except JsonlError as exc:
        raise RecordsError(str(exc)) from exc


def _row(record: TrajectoryRecord) -> dict[str, Any]:
    row = record.model_dump(mode="json")
    for column in JSON_COLUMNS:
        row[column] = json.dumps(row[column])
    return row


def record_from_row(row: Mapping[str, Any]) -> TrajectoryRecord:
    """The record of one row of :func:`records_dataset` (JSON columns decoded)."""
    values = dict(row)
    for column in JSON_COLUMNS:
        values[column] = json.loads(values[column])
    return TrajectoryRecord.model_validate(values)


def records_dataset(source: str | Path | Sequence[TrajectoryRecord] | Iterable[TrajectoryRecord]) -> Any:
    """A Hugging Face ``datasets.Dataset`` with one row per record.

    Args:
        source: A JSONL records file, or records.

    Returns:
        A ``datasets.Dataset`` whose :data:`JSON_COLUMNS` hold JSON strings (decode a row with
        :func:`record_from_row`); the other columns are typed.

    """
    # datasets is heavy and untyped: imported when a dataset is asked for.
    datasets = importlib.import_module("datasets")
    Features, List, Value = datasets.Features, datasets.List, datasets.Value

    records = read_records(source) if isinstance(source, str | Path) else list(source)
    string, integer, number = Value("string"), Value("int64"), Value("float64")
    features = Features(
        {
            "schema_version": integer,
            "visioncreator": string,
            "thread_id": string,
            "seed": integer,
            "call_seed_base": integer,
            "answer": List(string),
            "policy_answer": List(string),
            "answer_repaired": Value("bool"),
            "termination": string,
            "timings": {"wall_s": number, "policy_s": number, "tools_s": number},
            "trajectory_id": string,
            "task_id": string,
            "group_id": string,
            "sample_index": integer,
            "tool_seed": integer,
            **dict.fromkeys(JSON_COLUMNS, string),
        }
    )
    missing = set(TrajectoryRecord.model_fields) - set(features)
    if missing:  # pragma: no cover - guards the schema above against new record fields
        raise RecordsError(f"records_dataset has no column type for {sorted(missing)}")
    rows = [_row(r) for r in records]
    return datasets.Dataset.from_list(rows, features=features)
