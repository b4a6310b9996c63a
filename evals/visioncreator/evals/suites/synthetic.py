"""The built-in synthetic suite: tasks generated deterministically from the synthetic vocabulary.

:func:`build_synthetic_suite` draws ``per_split`` tasks of each split from one seeded random
stream. Every request is written so that the synthetic environment's prompt parser reads back
exactly the scene (or edit) it was made from, and every checklist comes from that scene, so the
ground truth can verify each item. A multi task's image must also lack the kinds that only other
panels ask for (``absent`` items). ``data/synthetic.jsonl`` is its output at the defaults.
"""

from __future__ import annotations

import random

from visioncreator.evals.suites.inputs import input_scene
from visioncreator.evals.suites.model import InputImage, SuiteTask
from visioncreator.tool_servers.synthetic import (
    STYLES,
    CheckItem,
    EditOp,
    ObjectSpec,
    Relation,
    RelationSpec,
    SceneSpec,
    checklist_for_edit,
    checklist_for_spec,
    describe_spec,
    parse_edit,
    parse_prompt,
    plural,
)

__all__ = ["build_synthetic_suite", "describe_edit"]

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
        style=rng.choice(list(STYLES)[1:]) if style else None,
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
        return SuiteTask(
            id=f"multi-{i:03d}", split="multi", request=request, n_images=n, checklist=tuple(_multi_checklist(panels))
        )


def _multi_checklist(panels: list[SceneSpec]) -> list[CheckItem]:
    """Each panel's own items, ``absent`` items for the other panels' kinds, and consistency with panel 0.

    Without the ``absent`` items an image that holds every panel's objects (as prompting each
    panel with the whole request makes) would pass its own items and hide faults on the rest.
    """
    kinds = [[o.kind for o in p.objects] for p in panels]
    asked = list(dict.fromkeys(k for panel_kinds in kinds for k in panel_kinds))
    subject = kinds[0][0]
    checklist: list[CheckItem] = []
    for k, panel in enumerate(panels):
        checklist += checklist_for_spec(panel, image=k)
        checklist += [CheckItem(check="absent", image=k, subject=other) for other in asked if other not in kinds[k]]
        if k:
            checklist.append(CheckItem(check="consistency", image=k, subject=subject, reference=0))
    return checklist


def describe_edit(op: EditOp) -> str:
    """Write one edit operation as an instruction :func:`parse_edit` reads back."""
    if op.op == "recolor":
        return f"make the {op.kind} {op.color}"
    if op.op == "remove":
        return f"remove the {op.kind}"
    if op.op == "move":
        return f"move the {op.kind} {_REL_WORDS[op.relation or 'next_to']} the {op.other}"
    if op.op == "restyle":
        return f"turn it into a {STYLES[op.style or 'photo'][0]}"
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
        return (EditOp(op="restyle", style=rng.choice(list(STYLES)[1:])),)
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
