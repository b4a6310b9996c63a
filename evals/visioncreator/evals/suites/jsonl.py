"""Suite files: JSONL, one task a line, read line by line so that one bad line costs one task.

The schema is documented in ``docs/suites.md``. :func:`load_suite_checked` reads a file line by
line: a line that cannot become a task (bad JSON, unknown split, schema violation, missing input
image file) becomes a :class:`~visioncreator.evals.results.TaskError` naming the line, and the
other tasks load. The built-in synthetic suite is generated deterministically by
:mod:`visioncreator.evals.suites.synthetic` and shipped as ``data/synthetic.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from visioncreator.evals.results import TaskError
from visioncreator.evals.suites.inputs import input_file
from visioncreator.evals.suites.model import SuiteError, SuiteLoad, SuiteTask
from visioncreator.policy import Split

__all__ = [
    "BUILTIN_SUITE",
    "by_split",
    "load_suite",
    "load_suite_checked",
    "parse_task_line",
    "write_suite",
]

BUILTIN_SUITE = "synthetic.jsonl"


def _suite_source(path: str | Path | None) -> tuple[bytes, Path | None, str]:
    """The suite's bytes, the folder its image paths are relative to, and its name for messages."""
    if path is None:
        return files("visioncreator.evals").joinpath("data", BUILTIN_SUITE).read_bytes(), None, BUILTIN_SUITE
    file = Path(path)
    try:
        return file.read_bytes(), file.resolve().parent, str(file)
    except OSError as exc:
        raise SuiteError(f"cannot read suite file {file}: {exc.strerror or exc}") from exc


def _validation_message(exc: ValidationError, raw: object) -> str:
    """One readable sentence per problem; an unknown split is named as such."""
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "task"
        if error["loc"] == ("split",) and isinstance(raw, dict) and "split" in raw:
            parts.append(f"unknown split {raw['split']!r} (expected one of {', '.join(get_args(Split))})")
        else:
            parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_task_line(
    text: str, line: int, base_dir: Path | None, *, allow_outside_inputs: bool = False
) -> SuiteTask | TaskError:
    """One line of a suite file as a task, or the error that names the line and the problem.

    Args:
        text: The line (without its newline).
        line: Its 1-based number, for the message.
        base_dir: Folder that input image paths are relative to; ``None`` skips the file check.
        allow_outside_inputs: Let input image paths lead outside ``base_dir`` (else such a path is
            a load error and nothing is read).

    Returns:
        The task, or a ``TaskError`` with ``stage="load"``.

    """
    try:
        raw = json.loads(text)
    except ValueError as exc:
        return TaskError(stage="load", line=line, message=f"line {line}: not valid JSON: {exc}")
    task_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
    named = f"line {line}" + (f" (task {task_id!r})" if task_id else "")
    if not isinstance(raw, dict):
        return TaskError(stage="load", line=line, message=f"{named}: a task must be a JSON object")
    try:
        task = SuiteTask.model_validate(raw)
    except ValidationError as exc:
        return TaskError(stage="load", line=line, id=task_id, message=f"{named}: {_validation_message(exc, raw)}")
    if base_dir is not None:
        for k, image in enumerate(task.inputs):
            if image.path is None:
                continue
            try:
                file = input_file(base_dir, image.path, allow_outside=allow_outside_inputs)
            except SuiteError as exc:
                return TaskError(stage="load", line=line, id=task_id, message=f"{named}: input image {k}: {exc}")
            if not file.is_file():
                message = f"{named}: input image {k} {image.path!r} not found (looked in {base_dir})"
                return TaskError(stage="load", line=line, id=task_id, message=message)
    return task


def load_suite_checked(path: str | Path | None = None, *, allow_outside_inputs: bool = False) -> SuiteLoad:
    """Read a suite file (JSONL, one task a line), keeping going past bad lines.

    Blank lines are skipped. A line that is not UTF-8 or JSON, has an unknown split, breaks the
    schema, repeats an earlier id, or names an input image file that does not exist (or, unless
    ``allow_outside_inputs``, lies outside the suite's folder) becomes a
    ``TaskError(stage="load", line=N)`` whose message names the line and the problem.

    Args:
        path: The suite file; ``None`` reads the built-in synthetic suite.
        allow_outside_inputs: Let input image paths lead outside the suite file's folder.

    Returns:
        The tasks that loaded, in file order, and the errors.

    Raises:
        SuiteError: The file itself cannot be read.

    """
    data, base_dir, _ = _suite_source(path)
    out = SuiteLoad()
    first_line: dict[str, int] = {}
    for number, chunk in enumerate(data.split(b"\n"), start=1):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.errors.append(TaskError(stage="load", line=number, message=f"line {number}: not UTF-8 text: {exc}"))
            continue
        if not text.strip():
            continue
        parsed = parse_task_line(text, number, base_dir, allow_outside_inputs=allow_outside_inputs)
        if isinstance(parsed, TaskError):
            out.errors.append(parsed)
        elif parsed.id in first_line:
            message = f"line {number}: duplicate task id {parsed.id!r} (first on line {first_line[parsed.id]})"
            out.errors.append(TaskError(stage="load", line=number, id=parsed.id, message=message))
        else:
            first_line[parsed.id] = number
            out.tasks.append(parsed)
    return out


def load_suite(path: str | Path | None = None) -> list[SuiteTask]:
    """Read a suite file strictly; ``None`` reads the built-in synthetic suite.

    Raises:
        SuiteError: The file cannot be read, or a line is bad (the first bad line is named;
            ``errors`` holds them all).

    """
    loaded = load_suite_checked(path)
    if loaded.errors:
        first = loaded.errors[0]
        more = f" (and {len(loaded.errors) - 1} more bad lines)" if len(loaded.errors) > 1 else ""
        raise SuiteError(f"{path or BUILTIN_SUITE}: {first.message}{more}", loaded.errors)
    return loaded.tasks


def write_suite(tasks: Iterable[SuiteTask], path: str | Path) -> None:
    """Write a suite file."""
    Path(path).write_text("".join(t.model_dump_json(exclude_defaults=True) + "\n" for t in tasks))


def by_split(tasks: Sequence[SuiteTask]) -> dict[str, list[SuiteTask]]:
    """Group tasks by split, in the order splits first appear."""
    groups: dict[str, list[SuiteTask]] = {}
    for task in tasks:
        groups.setdefault(task.split, []).append(task)
    return groups
