"""Task suites: a JSONL file of tasks, each with a checklist the ground truth can verify.

The schema is documented in ``docs/suites.md``. :func:`load_suite_checked` reads a file line by
line: a line that cannot become a task (bad JSON, unknown split, schema violation, missing input
image file) becomes a :class:`~visioncreator.evals.results.TaskError` naming the line, and the
other tasks load. The built-in synthetic suite is generated deterministically by
:mod:`visioncreator.evals.synthetic_suite` and shipped as ``data/synthetic.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visioncreator.evals.errors import EvalsError
from visioncreator.evals.results import TaskError
from visioncreator.policy import Split
from visioncreator.tool_servers import Generated, ImageStore, TextToImageInput, ToolServerError, decode_image
from visioncreator.tool_servers.synthetic import CheckItem, Scene, SyntheticBackend, SyntheticSettings

BUILTIN_SUITE = "synthetic.jsonl"


class SuiteError(EvalsError, ValueError):
    """A suite file, or an input image it names, that cannot be used (the message names the line or file)."""

    def __init__(self, message: str, errors: Sequence[TaskError] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class InputImage(BaseModel):
    """An input image of a task: exactly one of ``prompt`` and ``path``.

    A ``prompt`` image is rendered by the synthetic environment (faults off); a ``path`` image is
    a user's file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = None
    """What the synthetic environment renders (its scene is the image's ground truth)."""
    path: str | None = None
    """An image file (PNG, JPEG or WEBP), relative to the suite file's folder; it has no ground truth."""
    seed: int = 0
    width: int = 512
    height: int = 512

    @model_validator(mode="after")
    def _one_source(self) -> InputImage:
        if (self.prompt is None) == (self.path is None):
            raise ValueError("an input image needs exactly one of 'prompt' and 'path'")
        if self.path is not None and (not self.path.strip() or Path(self.path).is_absolute()):
            raise ValueError(f"input image path {self.path!r} must be a non-empty path relative to the suite file")
        return self


class SuiteTask(BaseModel):
    """One task of a suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    split: Split
    request: str = Field(min_length=1)
    n_images: int = Field(ge=1, le=16)
    inputs: tuple[InputImage, ...] = ()
    checklist: tuple[CheckItem, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)
    """Free-form labels carried into reports (e.g. GenEval's ``tag``, GEdit-Bench's ``task_type``)."""

    @model_validator(mode="after")
    def _indices(self) -> SuiteTask:
        for k, item in enumerate(self.checklist):
            if item.image >= self.n_images:
                raise ValueError(f"checklist[{k}] is about output image {item.image}, but n_images is {self.n_images}")
            if item.check == "consistency" and (item.reference is None or item.reference >= self.n_images):
                raise ValueError(f"checklist[{k}] (consistency) needs a reference output image below {self.n_images}")
            if item.check == "preserved" and (item.reference is None or item.reference >= len(self.inputs)):
                raise ValueError(f"checklist[{k}] (preserved) needs a reference input image below {len(self.inputs)}")
        return self


class SuiteLoad(BaseModel):
    """What :func:`load_suite_checked` read: the tasks that loaded and an error per line that did not."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[SuiteTask] = Field(default_factory=list)
    errors: list[TaskError] = Field(default_factory=list)


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


def parse_task_line(text: str, line: int, base_dir: Path | None) -> SuiteTask | TaskError:
    """One line of a suite file as a task, or the error that names the line and the problem.

    Args:
        text: The line (without its newline).
        line: Its 1-based number, for the message.
        base_dir: Folder that input image paths are relative to; ``None`` skips the file check.

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
            if image.path is not None and not (base_dir / image.path).is_file():
                message = f"{named}: input image {k} {image.path!r} not found (looked in {base_dir})"
                return TaskError(stage="load", line=line, id=task_id, message=message)
    return task


def load_suite_checked(path: str | Path | None = None) -> SuiteLoad:
    """Read a suite file (JSONL, one task a line), keeping going past bad lines.

    Blank lines are skipped. A line that is not UTF-8 or JSON, has an unknown split, breaks the
    schema, repeats an earlier id, or names an input image file that does not exist becomes a
    ``TaskError(stage="load", line=N)`` whose message names the line and the problem.

    Args:
        path: The suite file; ``None`` reads the built-in synthetic suite.

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
        parsed = parse_task_line(text, number, base_dir)
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


async def _render(image: InputImage) -> Generated:
    if image.prompt is None:
        raise SuiteError("this input image is a file, not a prompt: it has no synthetic scene")
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
    args = TextToImageInput(prompt=image.prompt, width=image.width, height=image.height, seed=image.seed)
    return await backend.text_to_image(args)


async def input_scene(image: InputImage) -> Scene:
    """The ground-truth scene of a prompt-rendered input image (what the environment renders, faults off).

    Raises:
        SuiteError: The image is a file (``path``): files have no ground truth.

    """
    generated = await _render(image)
    assert generated.truth is not None
    return generated.truth.scene


async def materialize_input(store: ImageStore, image: InputImage, base_dir: Path) -> tuple[str, Scene | None]:
    """Put a task's input image into a store the tool servers share; its handle and ground-truth scene.

    A ``prompt`` image is rendered by the synthetic environment with faults off (its scene is the
    ground truth). A ``path`` image is read from ``base_dir / path``, decoded by the safe decoder
    within the store's limits, and stored without ground truth (any truth chunk in the file is
    ignored: a user's file cannot claim what is in it).

    Args:
        store: The image store.
        image: The input image of a task.
        base_dir: The suite file's folder.

    Returns:
        The handle, and the scene (``None`` for a file).

    Raises:
        SuiteError: The file cannot be read, is too large, or is not a supported image.

    """
    if image.path is None:
        generated = await _render(image)
        stored = store.put(generated.image, generated.truth)
        return stored.handle, generated.truth.scene if generated.truth is not None else None
    file = base_dir / image.path
    try:
        data = await asyncio.to_thread(file.read_bytes)
        decoded = await asyncio.to_thread(
            decode_image,
            data,
            max_bytes=store.max_input_bytes,
            max_pixels=store.max_decoded_pixels,
            allowed=store.allowed_formats,
        )
    except OSError as exc:
        raise SuiteError(f"cannot read input image {file}: {exc.strerror or exc}") from exc
    except ToolServerError as exc:
        raise SuiteError(f"input image {file} is not usable: {exc}") from exc
    stored = await asyncio.to_thread(store.put, decoded, None)
    return stored.handle, None


async def build_synthetic_suite(per_split: int = 20, seed: int = 0) -> list[SuiteTask]:
    """Generate the built-in synthetic suite (:func:`visioncreator.evals.synthetic_suite.build_synthetic_suite`).

    Kept here so that ``from visioncreator.evals.suite import build_synthetic_suite`` goes on working;
    the import is deferred because the builder module imports this one.
    """
    from visioncreator.evals import synthetic_suite

    return await synthetic_suite.build_synthetic_suite(per_split=per_split, seed=seed)


def by_split(tasks: Sequence[SuiteTask]) -> dict[str, list[SuiteTask]]:
    """Group tasks by split, in the order splits first appear."""
    groups: dict[str, list[SuiteTask]] = {}
    for task in tasks:
        groups.setdefault(task.split, []).append(task)
    return groups
