"""Task suites: a JSONL file of tasks, each with a checklist the ground truth can verify.

The schema is documented in ``docs/suites.md``. :func:`load_suite_checked` reads a file line by
line: a line that cannot become a task (bad JSON, unknown split, schema violation, missing input
image file) becomes a :class:`~visioncreator.evals.results.TaskError` naming the line, and the
other tasks load. The built-in synthetic suite is generated deterministically from the synthetic
environment's vocabulary (``build_synthetic_suite``) and shipped as ``data/synthetic.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visioncreator.evals.results import TaskError
from visioncreator.policy.types import Split
from visioncreator.tool_servers.backend import Generated
from visioncreator.tool_servers.checklist_models import CheckItem
from visioncreator.tool_servers.decode import decode_image
from visioncreator.tool_servers.errors import ToolServerError
from visioncreator.tool_servers.scene import EditOp, ObjectSpec, Relation, RelationSpec, Scene, SceneSpec
from visioncreator.tool_servers.schemas import TextToImageInput
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic import vocab
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.checklist import checklist_for_edit, checklist_for_spec
from visioncreator.tool_servers.synthetic.prompt import describe_spec, parse_edit, parse_prompt, plural

BUILTIN_SUITE = "synthetic.jsonl"
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
_REL_WORDS: dict[Relation, str] = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "above",
    "below": "below",
    "next_to": "next to",
}
_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray", "cyan")
# Objects that read well in prompts; all are COCO classes.
_KINDS = (
    "dog", "cat", "car", "bus", "bicycle", "bench", "umbrella", "apple", "banana", "cup", "bowl", "chair",
    "clock", "vase", "book", "bird", "horse", "kite", "laptop", "teddy bear", "traffic light", "pizza",
)  # fmt: skip
_WORDS = ("HELLO", "SALE", "OPEN", "CAFE", "STOP", "PARK", "JAZZ", "LUNCH")


class SuiteError(ValueError):
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


def _spec(rng: random.Random, *, n_groups: int, relation: bool, text: bool, style: bool) -> SceneSpec:
    kinds = rng.sample(_KINDS, n_groups)
    colors = rng.sample(_COLORS, n_groups)
    objects = tuple(
        ObjectSpec(kind=k, count=rng.choice((1, 1, 2, 3)), color=c) for k, c in zip(kinds, colors, strict=True)
    )
    relations: tuple[RelationSpec, ...] = ()
    if relation and n_groups >= 2:
        rel: Relation = rng.choice(list(_REL_WORDS))
        relations = (RelationSpec(subject=kinds[0], relation=rel, object=kinds[1]),)
    return SceneSpec(
        objects=objects,
        relations=relations,
        text=rng.choice(_WORDS) if text else None,
        style=rng.choice(list(vocab.STYLES)[1:]) if style else None,
    )


def _single(rng: random.Random, i: int) -> SuiteTask:
    while True:
        spec = _spec(
            rng, n_groups=rng.choice((1, 2, 2)), relation=rng.random() < 0.6, text=rng.random() < 0.4,
            style=rng.random() < 0.3,
        )  # fmt: skip
        request = describe_spec(spec)
        if parse_prompt(request) == spec:
            return SuiteTask(
                id=f"single-{i:03d}", split="single", request=request, n_images=1,
                checklist=tuple(checklist_for_spec(spec)),
            )  # fmt: skip


def _multi(rng: random.Random, i: int) -> SuiteTask:
    while True:
        n = rng.choice((2, 3, 3, 4))
        kind, color = rng.choice(_KINDS), rng.choice(_COLORS)
        subject = ObjectSpec(kind=kind, count=1, color=color)
        panels: list[SceneSpec] = []
        for _ in range(n):
            other_kind = rng.choice([k for k in _KINDS if k != kind])
            other = ObjectSpec(kind=other_kind, count=1, color=rng.choice([c for c in _COLORS if c != color]))
            if rng.random() < 0.7:
                rel = RelationSpec(subject=kind, relation=rng.choice(list(_REL_WORDS)), object=other_kind)
                panels.append(SceneSpec(objects=(subject, other), relations=(rel,)))
            else:
                panels.append(SceneSpec(objects=(subject,), text=rng.choice(_WORDS)))
        texts = [describe_spec(p) for p in panels]
        if any(parse_prompt(t) != p for t, p in zip(texts, panels, strict=True)):
            continue
        request = f"{_NUMBER_WORDS[n].capitalize()} images of the same {color} {kind}: {'; '.join(texts)}"
        checklist: list[CheckItem] = []
        for k, panel in enumerate(panels):
            checklist += checklist_for_spec(panel, image=k)
            if k:
                checklist.append(CheckItem(check="consistency", image=k, subject=kind, reference=0))
        return SuiteTask(id=f"multi-{i:03d}", split="multi", request=request, n_images=n, checklist=tuple(checklist))


def describe_edit(op: EditOp) -> str:
    """Write one edit operation as an instruction :func:`parse_edit` reads back."""
    if op.op == "recolor":
        return f"make the {op.kind} {op.color}"
    if op.op == "remove":
        return f"remove the {op.kind}"
    if op.op == "move":
        return f"move the {op.kind} {_REL_WORDS[op.relation or 'next_to']} the {op.other}"
    if op.op == "restyle":
        return f"turn it into a {vocab.STYLES[op.style or 'photo'][0]}"
    if op.op == "text":
        return f'write the text "{op.text}"'
    count = op.count or 1
    noun = " ".join(w for w in (op.color, op.kind if count == 1 else plural(op.kind or "")) if w)
    lead = "a" if count == 1 else _NUMBER_WORDS[count]
    if count == 1 and noun[0] in "aeiou":
        lead = "an"
    where = f" {_REL_WORDS[op.relation]} the {op.other}" if op.relation and op.other else ""
    return f"add {lead} {noun}{where}"


def _edit_ops(rng: random.Random, spec: SceneSpec) -> tuple[EditOp, ...]:
    present = [o.kind for o in spec.objects]
    target = rng.choice(present)
    choice = rng.choice(("recolor", "remove", "add", "move", "restyle", "text"))
    if choice == "recolor":
        old = next(o.color for o in spec.objects if o.kind == target)
        return (EditOp(op="recolor", kind=target, color=rng.choice([c for c in _COLORS if c != old])),)
    if choice == "remove" and len(present) > 1:
        return (EditOp(op="remove", kind=target),)
    if choice == "move" and len(present) > 1:
        other = rng.choice([k for k in present if k != target])
        return (EditOp(op="move", kind=target, relation=rng.choice(list(_REL_WORDS)), other=other),)
    if choice == "restyle":
        return (EditOp(op="restyle", style=rng.choice(list(vocab.STYLES)[1:])),)
    if choice == "text":
        return (EditOp(op="text", text=rng.choice(_WORDS)),)
    new = rng.choice([k for k in _KINDS if k not in present])
    relation: Relation | None = rng.choice([None, *_REL_WORDS])
    return (
        EditOp(
            op="add", kind=new, count=rng.choice((1, 2)), color=rng.choice(_COLORS), relation=relation,
            other=target if relation else None,
        ),
    )  # fmt: skip


async def _img2img(rng: random.Random, i: int) -> SuiteTask:
    while True:
        spec = _spec(rng, n_groups=rng.choice((2, 3)), relation=False, text=False, style=False)
        prompt = describe_spec(spec)
        image = InputImage(prompt=prompt, seed=rng.randrange(10_000), width=512, height=512)
        ops = _edit_ops(rng, spec)
        instruction = " and ".join(describe_edit(op) for op in ops)
        if parse_edit(instruction) != ops or parse_prompt(prompt) != spec:
            continue
        scene = await input_scene(image)
        checklist = checklist_for_edit(ops, image=0, source=0, source_scene=scene)
        return SuiteTask(
            id=f"img2img-{i:03d}", split="img2img", request=instruction, n_images=1, inputs=(image,),
            checklist=tuple(checklist),
        )  # fmt: skip


async def build_synthetic_suite(per_split: int = 20, seed: int = 0) -> list[SuiteTask]:
    """Generate the built-in synthetic suite: ``per_split`` tasks of each split, deterministically."""
    rng = random.Random(seed)
    tasks = [_single(rng, i) for i in range(per_split)]
    tasks += [_multi(rng, i) for i in range(per_split)]
    tasks += [await _img2img(rng, i) for i in range(per_split)]
    return tasks


def by_split(tasks: Sequence[SuiteTask]) -> dict[str, list[SuiteTask]]:
    """Group tasks by split, in the order splits first appear."""
    groups: dict[str, list[SuiteTask]] = {}
    for task in tasks:
        groups.setdefault(task.split, []).append(task)
    return groups
