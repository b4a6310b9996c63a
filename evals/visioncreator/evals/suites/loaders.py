"""Loaders for suites in other benchmarks' formats: GenEval metadata and GEdit-Bench.

Both turn a user's file into :class:`~visioncreator.evals.suites.SuiteTask` records, with the same
error handling as our own JSONL (:func:`~visioncreator.evals.suites.load_suite_checked`): an entry
that cannot become a task is a ``TaskError`` that names its line (or, in a JSON array, its entry),
and the others load. :func:`load_any_suite` picks the loader from the file's content.

GenEval (``evaluation_metadata.jsonl``, one prompt a line)::

    {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 3}],
     "prompt": "a photo of two dogs"}

Each ``include`` object gives an ``object`` item (count 1) or a ``count`` item (count N), a
``color`` item for ``color`` and a ``position`` item for ``position: ["left of", k]`` (this object
is left of include ``k``). GenEval's ``exclude`` means *fewer than* ``count``: count 1 becomes an
``absent`` item; ``count`` one above an include of the same class pins that include's exact count
(GenEval's ``counting`` tag); any other bound is an error. An include count of N without that
exclude is GenEval's *at least N*; it is checked as exactly N (our checklist has no lower bound).
Task ids are ``geneval-NNNNN``, the 0-based line index (the folder name GenEval's own scripts use).

GEdit-Bench (a JSON array or JSONL of entries, exported from its public release with the images
saved as files)::

    {"key": "a1b2", "task_type": "color_alter", "instruction": "make the car red",
     "instruction_language": "en", "input_image": "images/a1b2.png", "input_image_raw": "raw/a1b2.png",
     "Intersection_exist": true}

Field names follow the public release (``stepfun-ai/GEdit-Bench``). Assumptions: the image fields
hold a path relative to the file's folder, a ``{"path": ...}`` object (what ``datasets`` writes for
an image column) or a list of paths; ``input_image_raw`` (the original) is used when present, else
``input_image``. Tasks are ``img2img`` with one output, id ``key``, an empty checklist (GEdit is
scored by the judge's semantic consistency and perceptual quality), and tags ``task_type``,
``language`` and, when given, ``intersection_exist``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visioncreator.evals.results import TaskError
from visioncreator.evals.suites.inputs import input_file
from visioncreator.evals.suites.jsonl import load_suite_checked
from visioncreator.evals.suites.model import InputImage, SuiteError, SuiteLoad, SuiteTask
from visioncreator.tool_servers.synthetic import RELATIONS, CheckItem, Relation

__all__ = ["SuiteFormat", "detect_format", "geneval_task", "load_any_suite", "load_gedit", "load_geneval"]

SuiteFormat = Literal["visioncreator", "geneval", "gedit"]


class _GenEvalObject(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    kind: str = Field(alias="class", min_length=1)
    count: int = Field(default=1, ge=1)
    color: str | None = None
    position: tuple[str, int] | None = None


class _GenEvalEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tag: str = ""
    prompt: str = Field(min_length=1)
    include: list[_GenEvalObject] = Field(min_length=1)
    exclude: list[_GenEvalObject] = Field(default_factory=list)


class _GEditEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str = Field(min_length=1)
    task_type: str = ""
    instruction: str = Field(min_length=1)
    instruction_language: str = "en"
    input_image: Any = None
    input_image_raw: Any = None
    intersection_exist: bool | None = Field(default=None, alias="Intersection_exist")


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def geneval_task(raw: dict[str, Any], index: int) -> SuiteTask:
    """One GenEval metadata entry as a single-image task (see the module docstring for the mapping).

    Args:
        raw: The parsed JSON object.
        index: Its 0-based line index (the task id is ``geneval-{index:05d}``).

    Raises:
        ValueError: The entry breaks GenEval's format or uses a bound the checklist cannot express.

    """
    try:
        entry = _GenEvalEntry.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_errors(exc)) from None
    exact: dict[int, int] = {}
    items: list[CheckItem] = []
    for bound in entry.exclude:
        if bound.count == 1:
            items.append(CheckItem(check="absent", subject=bound.kind))
            continue
        match = next(
            (k for k, o in enumerate(entry.include) if o.kind == bound.kind and o.count == bound.count - 1), None
        )
        if match is None:
            raise ValueError(
                f"exclude {bound.kind!r} with count {bound.count}: only count 1 (absent) or one more than an "
                f"include of the same class (an exact count) can be checked"
            )
        exact[match] = bound.count - 1
    for k, obj in enumerate(entry.include):
        if obj.count == 1 and k not in exact:
            items.append(CheckItem(check="object", subject=obj.kind))
        else:
            items.append(CheckItem(check="count", subject=obj.kind, value=obj.count))
        if obj.color:
            items.append(CheckItem(check="color", subject=obj.kind, value=obj.color))
        if obj.position is not None:
            phrase, target = obj.position
            relation = RELATIONS.get(phrase.strip().lower())
            if relation is None:
                raise ValueError(f"include[{k}].position: unknown relation {phrase!r}")
            if not 0 <= target < len(entry.include) or target == k:
                raise ValueError(f"include[{k}].position: {target} is not the index of another include")
            other = entry.include[target].kind
            items.append(CheckItem(check="position", subject=obj.kind, relation=cast(Relation, relation), other=other))
    tags = {"tag": entry.tag} if entry.tag else {}
    return SuiteTask(
        id=f"geneval-{index:05d}", split="single", request=entry.prompt, n_images=1, checklist=tuple(items), tags=tags
    )


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | TaskError]]:
    """Each non-blank line of a JSONL file: its number and object, or the error naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"cannot read suite file {path}: {exc.strerror or exc}") from exc
    for number, chunk in enumerate(data.split(b"\n"), start=1):
        if not chunk.strip():
            continue
        try:
            raw = json.loads(chunk.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            yield number, TaskError(stage="load", line=number, message=f"line {number}: not valid JSON: {exc}")
            continue
        if not isinstance(raw, dict):
            yield number, TaskError(stage="load", line=number, message=f"line {number}: an entry must be a JSON object")
            continue
        yield number, raw


def load_geneval(path: str | Path) -> SuiteLoad:
    """Read a GenEval metadata file (JSONL) as single-image tasks; bad lines become errors.

    Raises:
        SuiteError: The file itself cannot be read.

    """
    out = SuiteLoad()
    for number, raw in _json_lines(Path(path)):
        if isinstance(raw, TaskError):
            out.errors.append(raw)
            continue
        try:
            out.tasks.append(geneval_task(raw, number - 1))
        except ValueError as exc:
            out.errors.append(TaskError(stage="load", line=number, message=f"line {number}: {exc}"))
    return out


def _image_paths(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return [value["path"]]
    if isinstance(value, list):
        return [p for v in value for p in _image_paths(v)]
    raise ValueError(f"an image field must be a path, a {{'path': ...}} object or a list of them, not {value!r:.60}")


def _gedit_task(raw: dict[str, Any], base_dir: Path, allow_outside: bool) -> SuiteTask:
    try:
        entry = _GEditEntry.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_errors(exc)) from None
    paths = _image_paths(entry.input_image_raw) or _image_paths(entry.input_image)
    if not paths:
        raise ValueError(f"key {entry.key!r}: no input_image_raw or input_image path")
    inputs = []
    for k, rel in enumerate(paths):
        try:
            image = InputImage(path=rel)
        except ValidationError as exc:
            raise ValueError(f"key {entry.key!r}: input image {k}: {_errors(exc)}") from None
        try:
            file = input_file(base_dir, rel, allow_outside=allow_outside)
        except SuiteError as exc:
            raise ValueError(f"key {entry.key!r}: input image {k}: {exc}") from None
        if not file.is_file():
            raise ValueError(f"key {entry.key!r}: input image {k} {rel!r} not found (looked in {base_dir})")
        inputs.append(image)
    tags = {"task_type": entry.task_type, "language": entry.instruction_language}
    if entry.intersection_exist is not None:
        tags["intersection_exist"] = str(entry.intersection_exist).lower()
    return SuiteTask(
        id=entry.key, split="img2img", request=entry.instruction, n_images=1, inputs=tuple(inputs), tags=tags
    )


def load_gedit(path: str | Path, *, language: str | None = None, allow_outside_inputs: bool = False) -> SuiteLoad:
    """Read GEdit-Bench entries (a JSON array, or JSONL) as img2img tasks; bad entries become errors.

    Args:
        path: The file; image paths in it are relative to its folder.
        language: Keep only entries whose ``instruction_language`` is this (``"en"``, ``"cn"``);
            ``None`` keeps all.
        allow_outside_inputs: Let image paths lead outside the file's folder (else such an entry
            is an error and nothing is read).

    Raises:
        SuiteError: The file cannot be read, or a JSON file is not an array of objects.

    """
    file = Path(path)
    base_dir = file.resolve().parent
    entries: list[tuple[str, int | None, dict[str, Any] | TaskError]] = []
    if _is_json_array(file):
        try:
            data = json.loads(file.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise SuiteError(f"cannot read GEdit-Bench file {file}: {exc}") from exc
        for k, raw in enumerate(data, start=1):
            where = f"entry {k}"
            item = raw if isinstance(raw, dict) else TaskError(stage="load", message=f"{where}: not a JSON object")
            entries.append((where, None, item))
    else:
        entries = [(f"line {n}", n, raw) for n, raw in _json_lines(file)]
    out = SuiteLoad()
    seen: dict[str, str] = {}
    for where, line, raw in entries:
        if isinstance(raw, TaskError):
            out.errors.append(raw)
            continue
        if language is not None and raw.get("instruction_language", "en") != language:
            continue
        try:
            task = _gedit_task(raw, base_dir, allow_outside_inputs)
        except ValueError as exc:
            key = raw.get("key") if isinstance(raw.get("key"), str) else None
            out.errors.append(TaskError(stage="load", line=line, id=key, message=f"{where}: {exc}"))
            continue
        if task.id in seen:
            message = f"{where}: duplicate key {task.id!r} (first at {seen[task.id]})"
            out.errors.append(TaskError(stage="load", line=line, id=task.id, message=message))
            continue
        seen[task.id] = where
        out.tasks.append(task)
    return out


def _is_json_array(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            head = file.read(4096).lstrip()
    except OSError as exc:
        raise SuiteError(f"cannot read suite file {path}: {exc.strerror or exc}") from exc
    return head.startswith(b"[")


def detect_format(path: str | Path) -> SuiteFormat:
    """Which loader reads a file: a JSON array is GEdit-Bench; JSONL is told apart by its first object's keys.

    Raises:
        SuiteError: The file cannot be read or has no JSON object to tell by.

    """
    file = Path(path)
    if _is_json_array(file):
        return "gedit"
    for _, raw in _json_lines(file):
        if isinstance(raw, TaskError):
            continue
        if "tag" in raw and "include" in raw:
            return "geneval"
        if "instruction" in raw and "key" in raw:
            return "gedit"
        return "visioncreator"
    raise SuiteError(f"{file}: no JSON object found to tell the suite format by")


def load_any_suite(
    path: str | Path, *, format: SuiteFormat | None = None, allow_outside_inputs: bool = False
) -> SuiteLoad:
    """Read a suite in any supported format: ours, GenEval metadata, or GEdit-Bench.

    Args:
        path: The file.
        format: Skip detection and use this loader.
        allow_outside_inputs: Let input image paths lead outside the file's folder.

    Raises:
        SuiteError: The file cannot be read (bad entries are ``errors``, not raised).

    """
    chosen = format or detect_format(path)
    if chosen == "geneval":
        return load_geneval(path)
    if chosen == "gedit":
        return load_gedit(path, allow_outside_inputs=allow_outside_inputs)
    return load_suite_checked(path, allow_outside_inputs=allow_outside_inputs)
