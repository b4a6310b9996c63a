"""Checklists for synthetic tasks, their exact verification against scenes, and the reflection oracle.

``checklist_for_spec``/``checklist_for_edit`` turn what was asked into :class:`CheckItem` s;
``verify`` judges them against scenes (ground truth or ``inspect_image`` observations);
``critique`` does both for the scripted expert and phrases each failure as a fault a model could write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from visioncreator.tool_servers.names import ToolName
from visioncreator.tool_servers.scene import EditOp, Relation, Scene, SceneObject, SceneSpec
from visioncreator.tool_servers.synthetic.geometry import relation_holds
from visioncreator.tool_servers.synthetic.items import CheckItem, CheckResult
from visioncreator.tool_servers.synthetic.prompt import parse_edit, parse_prompt, plural

__all__ = [
    "checklist_for_edit",
    "checklist_for_spec",
    "critique",
    "scene_from_inspection",
    "verify",
]

# Checks whose `subject` names a kind an edit touches; `preserved` exempts those kinds.
_EDIT_ROLES: Final = frozenset({"object", "count", "color", "position", "absent"})
_RELATION_WORDS: Final[dict[Relation, str]] = {
    "left_of": "left of",
    "right_of": "right of",
    "above": "above",
    "below": "below",
    "next_to": "next to",
}


@dataclass(frozen=True, slots=True)
class _Verdict:
    passed: bool
    detail: str
    faults: tuple[str, ...] = ()


def _ok(detail: str) -> _Verdict:
    return _Verdict(True, detail)


def _fail(detail: str, *faults: str) -> _Verdict:
    return _Verdict(False, detail, faults)


def _n(count: int, kind: str) -> str:
    return f"{count} {kind if count == 1 else plural(kind)}"


def checklist_for_spec(spec: SceneSpec, image: int = 0) -> list[CheckItem]:
    """The checklist of a prompt: counts, colours, relations, text and style.

    Counts are per kind (specs of one kind add up, since a count check counts a whole kind).
    A colour item is made only for a kind requested in a single colour: "every apple is red"
    cannot express "a red apple and a green apple".

    Args:
        spec: The parsed prompt.
        image: Index of the output image the items are about.

    Returns:
        The items, in the order count, colour, position, text, style.

    """
    counts: Counter[str] = Counter()
    colours: dict[str, set[str | None]] = {}
    for obj in spec.objects:
        counts[obj.kind] += obj.count
        colours.setdefault(obj.kind, set()).add(obj.color)
    items = [CheckItem(check="count", image=image, subject=kind, value=n) for kind, n in counts.items()]
    for kind, names in colours.items():
        if len(names) == 1 and (name := next(iter(names))) is not None:
            items.append(CheckItem(check="color", image=image, subject=kind, value=name))
    items += [
        CheckItem(check="position", image=image, subject=r.subject, relation=r.relation, other=r.object)
        for r in spec.relations
    ]
    if spec.text is not None:
        items.append(CheckItem(check="text", image=image, value=spec.text))
    if spec.style is not None:
        items.append(CheckItem(check="style", image=image, value=spec.style))
    return items


def _op_items(op: EditOp, image: int, source_scene: Scene | None, added: Counter[str]) -> list[CheckItem]:
    if op.op == "restyle" and op.style:
        return [CheckItem(check="style", image=image, value=op.style)]
    if op.op == "text" and op.text is not None:
        return [CheckItem(check="text", image=image, value=op.text)]
    if op.kind is None:
        return []
    items: list[CheckItem] = []
    old = [o for o in source_scene.objects if o.kind == op.kind] if source_scene is not None else []
    if op.op == "add":
        if source_scene is None:
            items.append(CheckItem(check="object", image=image, subject=op.kind))
        else:
            added[op.kind] += op.count or 1  # "add a cat and a cat": the second count includes the first
            items.append(CheckItem(check="count", image=image, subject=op.kind, value=len(old) + added[op.kind]))
        # "Every apple is red" is only the postcondition when no apple of another colour was there.
        if op.color and all(o.color == op.color for o in old):
            items.append(CheckItem(check="color", image=image, subject=op.kind, value=op.color))
    elif op.op == "remove":
        items.append(CheckItem(check="absent", image=image, subject=op.kind))
    elif op.op == "recolor" and op.color:
        items.append(CheckItem(check="color", image=image, subject=op.kind, value=op.color))
    if op.op in ("add", "move") and op.relation is not None and op.other is not None:
        items.append(CheckItem(check="position", image=image, subject=op.kind, relation=op.relation, other=op.other))
    return items


def checklist_for_edit(
    ops: Iterable[EditOp], image: int = 0, source: int = 0, source_scene: Scene | None = None
) -> list[CheckItem]:
    """The postconditions of an edit, plus one ``preserved`` item for everything it did not name.

    Args:
        ops: The parsed edit.
        image: Index of the output image.
        source: Index of the input image that was edited (the ``preserved`` item's reference).
        source_scene: The input image's scene, when known: ``add`` then checks the exact new count.

    Returns:
        The items of each op in order, then the ``preserved`` item.

    """
    added: Counter[str] = Counter()
    items = [item for op in ops for item in _op_items(op, image, source_scene, added)]
    items.append(CheckItem(check="preserved", image=image, reference=source))
    return items


def _of(scene: Scene, kind: str | None) -> list[SceneObject]:
    return [o for o in scene.objects if o.kind == kind]


def _judge(item: CheckItem, outputs: Sequence[Scene], inputs: Sequence[Scene], edited: frozenset[str]) -> _Verdict:
    if item.image >= len(outputs):
        return _fail(f"no output image {item.image} ({len(outputs)} given)", f"missing image: {item.image}")
    scene = outputs[item.image]
    subject, value = item.subject, item.value
    if item.check == "text":
        if scene.text == value:
            return _ok(f"text is {value!r}")
        seen = "none" if scene.text is None else repr(scene.text)
        return _fail(f"text is {seen}, expected {value!r}", f"wrong text: {seen}, expected {value!r}")
    if item.check == "style":
        if scene.style == value:
            return _ok(f"style is {value}")
        return _fail(f"style is {scene.style}, expected {value}", f"wrong style: {scene.style}, expected {value}")
    if item.check == "preserved":
        return _preserved(item, scene, inputs, edited)
    if subject is None:
        return _fail(f"{item.check} item names no subject", f"unverifiable check: {item.check}")
    found = _of(scene, subject)
    missing = f"missing object: {subject}"
    if item.check == "object":
        return _ok(f"{_n(len(found), subject)} found") if found else _fail(f"no {subject} found", missing)
    if item.check == "absent":
        if not found:
            return _ok(f"no {subject} found")
        return _fail(f"{_n(len(found), subject)} found, expected none", f"still present: {subject}")
    if item.check == "count":
        if not isinstance(value, int):
            return _fail(f"count item has no integer value: {value!r}", f"unverifiable check: {item.check}")
        detail = f"{_n(len(found), subject)}, expected {value}"
        if len(found) == value:
            return _ok(detail)
        return _fail(detail, f"wrong count: {subject} {len(found)}, expected {value}" if found else missing)
    if item.check == "color":
        wrong = [o.color for o in found if o.color != value]
        if not found:
            return _fail(f"no {subject} found", missing)
        if not wrong:
            return _ok(f"every {subject} is {value}")
        return _fail(
            f"{len(wrong)} of {_n(len(found), subject)} not {value}: {', '.join(wrong)}",
            f"wrong colour: {subject} is {wrong[0]}, expected {value}",
        )
    if item.check == "position":
        return _position(item, scene, found)
    return _consistency(item, outputs, found)


def _position(item: CheckItem, scene: Scene, found: list[SceneObject]) -> _Verdict:
    subject, other, relation = item.subject, item.other, item.relation
    if other is None or relation is None:
        return _fail("position item needs a relation and another kind", "unverifiable check: position")
    others = _of(scene, other)
    if not found or not others:
        absent = [k for k, objs in ((subject, found), (other, others)) if not objs]
        return _fail(f"no {' and no '.join(map(str, absent))} found", *(f"missing object: {k}" for k in absent))
    words = f"{subject} {_RELATION_WORDS[relation]} {other}"
    for s in found:
        for o in others:
            if s.id != o.id and relation_holds(s.box, o.box, relation, scene.width, scene.height):
                return _ok(f"{words}: objects {s.id} and {o.id}")
    return _fail(f"no {words}", f"wrong position: {subject} not {_RELATION_WORDS[relation]} {other}")


def _consistency(item: CheckItem, outputs: Sequence[Scene], found: list[SceneObject]) -> _Verdict:
    subject, ref = item.subject, item.reference
    drift = f"identity drift: {subject} differs from the reference"
    if ref is None or ref >= len(outputs):
        return _fail(f"no reference output image {ref} ({len(outputs)} given)", f"missing image: {ref}")
    if not found:
        return _fail(f"no {subject} found", f"missing object: {subject}")
    wanted = {o.identity for o in _of(outputs[ref], subject)}
    if not wanted:
        return _fail(f"no {subject} in reference image {ref}", drift)
    differing = sorted({o.identity for o in found} - wanted)
    if not differing:
        return _ok(f"{subject} matches image {ref}")
    return _fail(f"{subject} looks like {', '.join(differing)}, image {ref} has {', '.join(sorted(wanted))}", drift)


def _preserved(item: CheckItem, scene: Scene, inputs: Sequence[Scene], edited: frozenset[str]) -> _Verdict:
    ref = item.reference if item.reference is not None else 0
    if ref >= len(inputs):
        return _fail(f"no input image {ref} ({len(inputs)} given)", f"missing image: {ref}")
    kept = Counter((o.kind, o.color) for o in inputs[ref].objects if o.kind not in edited)
    have = Counter((o.kind, o.color) for o in scene.objects)
    lost = kept - have
    if not lost:
        return _ok(f"all {sum(kept.values())} unedited objects kept")
    names = [f"{n} {color} {kind if n == 1 else plural(kind)}" for (kind, color), n in lost.items()]
    kinds = dict.fromkeys(kind for kind, _ in lost)
    return _fail(f"lost {', '.join(names)}", *(f"not preserved: {k}" for k in kinds))


def _edited_kinds(items: Sequence[CheckItem]) -> dict[int, frozenset[str]]:
    kinds: dict[int, set[str]] = {}
    for item in items:
        if item.check in _EDIT_ROLES and item.subject is not None:
            kinds.setdefault(item.image, set()).add(item.subject)
    return {image: frozenset(names) for image, names in kinds.items()}


def _verdicts(
    items: Sequence[CheckItem], outputs: Sequence[Scene], inputs: Sequence[Scene]
) -> list[tuple[CheckItem, _Verdict]]:
    edited = _edited_kinds(items)
    return [(item, _judge(item, outputs, inputs, edited.get(item.image, frozenset()))) for item in items]


def verify(items: Sequence[CheckItem], outputs: Sequence[Scene], inputs: Sequence[Scene] = ()) -> list[CheckResult]:
    """Judge checklist items exactly against scenes.

    ``position`` passes when any subject/other pair (two distinct objects) satisfies
    :func:`geometry.relation_holds`. ``consistency`` passes when every ``subject`` in output
    ``image`` has an identity that a ``subject`` of output ``reference`` has. ``preserved``
    exempts the kinds the edit names, which it reads from the list itself: the ``subject`` of
    every ``object``, ``count``, ``color``, ``position`` and ``absent`` item about the same
    image. Only subjects are exempt: the ``other`` of a relation is a landmark, not edited.
    Everything else of input ``reference`` must still be there with the same kind and colour
    (as a multiset). An item about a missing image fails; nothing raises.

    Args:
        items: The checklist.
        outputs: Scenes of the output images, by index.
        inputs: Scenes of the input images, by index (for ``preserved``).

    Returns:
        One result per item, in order, with what was found in words.

    """
    return [CheckResult(item=item, passed=v.passed, detail=v.detail) for item, v in _verdicts(items, outputs, inputs)]


def scene_from_inspection(d: Mapping[str, Any]) -> Scene:
    """The scene an ``InspectResult.model_dump()`` dict describes.

    Raises:
        pydantic.ValidationError: When the dict is not an inspection.

    """
    return Scene(
        width=d["width"],
        height=d["height"],
        style=d.get("style", "photo"),
        background=d.get("background", "white"),
        objects=tuple(SceneObject.model_validate(o) for o in d.get("objects", ())),
        text=d.get("text"),
    )


def _consistency_subject(goal: str, tool: str) -> str | None:
    """The kind whose identity a new image must keep from its references, if any.

    A multi-image task's consistency requirement is about one subject ("three images of the same
    blue bus"), and its checklist has ``consistency`` items about that subject only. Each panel's
    prompt names that subject first ("a blue bus above a white cup"); other kinds a panel shares
    with a reference are scenery and may differ (the cup may be red in one panel, white in the
    next). An edit keeps its source through the ``preserved`` item instead, so it has none.
    """
    if tool == ToolName.EDIT_IMAGE:
        return None
    objects = parse_prompt(goal).objects
    return objects[0].kind if objects else None


def critique(
    *,
    goal: str,
    tool: str,
    inspection: Mapping[str, Any],
    references: Sequence[Mapping[str, Any]] = (),
    source: Mapping[str, Any] | None = None,
) -> list[str]:
    """The faults of a new image, as short strings a reflecting model could write.

    Args:
        goal: The edit instruction for ``edit_image``, else the prompt.
        tool: The tool that made the image.
        inspection: ``InspectResult.model_dump()`` of the new image.
        references: Inspections of reference images. The subject the goal names first (a
            multi-image task's "the same X", which every panel's prompt opens with) must keep its
            identity from each reference that shows it; other kinds may differ, as in the task's
            checklist. Ignored for ``edit_image`` (its ``source`` is what it must preserve).
        source: Inspection of the edited image, for ``edit_image``: enables exact counts and
            the ``preserved`` check.

    Returns:
        Faults such as "missing object: dog" or "wrong count: apple 2, expected 3", without
        repeats; empty when the image is good or cannot be judged (``known: false``).

    """
    if not inspection.get("known", True):
        return []
    scene = scene_from_inspection(inspection)
    inputs: list[Scene] = []
    if tool == ToolName.EDIT_IMAGE:
        known_source = source is not None and source.get("known", True)
        source_scene = scene_from_inspection(source) if source is not None and known_source else None
        items = checklist_for_edit(parse_edit(goal), source_scene=source_scene)
        if source_scene is None:
            items = [i for i in items if i.check != "preserved"]
        else:
            inputs.append(source_scene)
    else:
        items = checklist_for_spec(parse_prompt(goal))
    outputs = [scene]
    subject = _consistency_subject(goal, tool)
    for ref in references:
        if subject is None or not ref.get("known", True):
            continue
        outputs.append(scene_from_inspection(ref))
        # A subject missing from the new image is already a count fault; one missing from the
        # reference gives nothing to compare with.
        if _of(scene, subject) and _of(outputs[-1], subject):
            items.append(CheckItem(check="consistency", subject=subject, reference=len(outputs) - 1))
    faults = [f for _, v in _verdicts(items, outputs, inputs) if not v.passed for f in v.faults]
    return list(dict.fromkeys(faults))
