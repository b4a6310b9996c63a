"""What an eval run writes: the run folder's layout and one result record per task.

A run folder (``visioncreator eval --out DIR``)::

    DIR/run.json              RunInfo: suite, policy, tools, settings, versions, start time
    DIR/results.jsonl         one TaskResult per line, appended as tasks finish (resume skips their ids)
    DIR/errors.jsonl          one TaskError per line: suite lines that could not load, tasks that crashed
                              or met a tool-server outage (a re-run retries every task without a result)
    DIR/trajectories/NAME.json  the full trajectory of each task (visioncreator.graph.Trajectory); NAME is
                              the task id, or for an id that is not plain lower-case [a-z0-9._-] the id
                              made safe plus "+" and 10 hex digits of its SHA-256 (see record_name)
    DIR/.lock                 held by the eval writing the folder (one at a time)
    DIR/store/                the image store (content-addressed PNGs, ``img_<sha256>.png``)
    DIR/checkpoints.sqlite    LangGraph checkpoints (a killed task resumes mid-trajectory)
    DIR/judge_cache.sqlite    cached judge answers, when a judge is used
    DIR/summary.json          Summary (written by the report)
    DIR/report.html, DIR/plots/*.png
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.graph import read_jsonl
from visioncreator.policy import Plan
from visioncreator.tool_servers.synthetic import CheckResult

__all__ = [
    "ERRORS_FILE",
    "RESULTS_FILE",
    "RUN_FILE",
    "JudgeScore",
    "ReflectionCategory",
    "ReflectionRecord",
    "RunInfo",
    "TaskCost",
    "TaskError",
    "TaskResult",
    "read_results",
    "record_name",
]

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
ERRORS_FILE = "errors.jsonl"

ReflectionCategory = Literal["good", "under", "over", "unknown"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskCost(_Record):
    """What one task cost."""

    policy_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0
    """Every tool call (the policy's and the graph's own inspections)."""
    generator_s: float = 0.0
    """Seconds spent in image-producing tool calls."""
    policy_s: float = 0.0
    wall_s: float = 0.0


class ReflectionRecord(_Record):
    """One verdict of one reflection on one image, classified against the ground truth."""

    turn: int
    """Index of the reflect turn in the trajectory."""
    image: str | None
    verdict: str
    """``accept``, ``redo`` or ``revise``."""
    faults_listed: list[str] = Field(default_factory=list)
    faults_true: list[str] | None = None
    """The faults really injected into the image (None: no ground truth)."""
    category: ReflectionCategory
    """good; under (missed a real fault or accepted a bad image); over (rejected a good image or redid
    needlessly); unknown (no ground truth)."""
    reason: str = ""


class JudgeScore(_Record):
    """A vision judge's view of one output image (VIEScore-style, 0-10)."""

    image: str
    semantic_consistency: float | None = None
    perceptual_quality: float | None = None
    overall: float | None = None
    checklist: dict[str, bool] = Field(default_factory=dict)
    """Checklist item (as text) -> the judge's yes/no."""
    model: str = ""
    cached: bool = False
    error: str | None = None


class TaskResult(_Record):
    """The scored result of one task of a run (a line of ``results.jsonl``)."""

    id: str
    split: str
    request: str
    success: bool
    """The right number of images and every checklist item satisfied."""
    checklist_score: float
    """Fraction of the checklist satisfied (0 when it cannot be checked)."""
    items: list[CheckResult] = Field(default_factory=list)
    scorer: str = "synthetic"
    """Which scorer gave ``items``: ``synthetic``, ``detectors`` or ``judge``."""
    answer: list[str] = Field(default_factory=list)
    answer_repaired: bool = False
    """The policy's answer was missing or invalid: the graph's repair is kept in ``answer`` for the
    report, but the task is scored on what the policy wrote (so it is not a success)."""
    inputs: list[str] = Field(default_factory=list)
    termination: str = ""
    plan: Plan | None = None
    reflections: list[ReflectionRecord] = Field(default_factory=list)
    judge: list[JudgeScore] = Field(default_factory=list)
    cost: TaskCost = Field(default_factory=TaskCost)
    faults_injected: int = 0
    faults_caught: int = 0
    faulty_answers: int = 0
    unreflected: int = 0
    """Images the policy's calls made that no reflection judged (reflection off or skipped)."""
    unreflected_faulty: int = 0
    """Of those, images with an injected fault."""
    trajectory: str = ""
    """Path of the trajectory file, relative to the run folder."""


class TaskError(_Record):
    """A task that could not be loaded or run; the rest of the suite still runs."""

    id: str | None = None
    line: int | None = None
    """1-based line of the suite file, for load errors."""
    stage: Literal["load", "run", "score", "infrastructure"]
    """``load``: a suite line; ``run``/``score``: the task failed; ``infrastructure``: the tool server
    was lost (an outage, not the policy's failure: never scored, and a re-run tries the task again)."""
    message: str


class RunInfo(_Record):
    """How a run was made (``run.json``)."""

    suite: str
    policy: str
    tools: str
    label: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    started_at: str = ""


_PLAIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_UNSAFE = re.compile(r"[^a-z0-9._-]")


def record_name(task_id: str) -> str:
    """The file name (without extension) of a task's files in the run folder; one per exact task id.

    A plain id (lower-case ASCII letters, digits, ``.``, ``_``, ``-``; at most 100 characters,
    starting with a letter or digit) is its own name. Any other id is made safe (lower-cased, other
    characters ``_``, cut to 100) and gets ``+`` and 10 hex digits of the SHA-256 of the exact id:
    ``x/1``, ``x_1`` and ``X_1`` get three names, which differ even on a case-insensitive file
    system, and no name holds a separator (``+`` never occurs in a plain id, so a hashed name never
    meets a plain one).
    """
    if _PLAIN.fullmatch(task_id):
        return task_id
    safe = _UNSAFE.sub("_", task_id.lower())[:100].lstrip(".") or "task"
    digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe}+{digest}"


def read_results(run_dir: str | Path) -> list[TaskResult]:
    """Every task result of a run folder, the last record winning for a repeated id.

    Raises:
        JsonlError: A line before the last one is not a result (a torn last line is skipped).

    """
    return list({r.id: r for r in read_jsonl(Path(run_dir) / RESULTS_FILE, TaskResult)}.values())
