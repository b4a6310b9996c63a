"""Edits on scenes: what ``edit_image`` does to the ground truth of an image.

Only the objects an operation names change; every other object keeps its kind, colour,
identity and box, which is what the ``preserved`` checklist item verifies.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from visioncreator.tool_servers.scene import Box, EditOp, Relation, Scene, SceneObject
from visioncreator.tool_servers.synthetic.geometry import relation_holds
from visioncreator.tool_servers.synthetic.layout import free_box, identity_of, pattern_of
from visioncreator.tool_servers.synthetic.vocab import COLORS, MAX_COUNT, PATTERNS

__all__ = ["apply_edit"]


def apply_edit(source: Scene, ops: Sequence[EditOp], rng: random.Random) -> Scene:
    """Apply edit operations, in order, to a scene.

    Args:
        source: The scene being edited.
        ops: The operations, as ``parse_edit`` returns them.
        rng: Source of randomness (placement and unspecified colours).

    Returns:
        The edited scene; object ids are renumbered to stay indexes.

    """
    scene = source
    for op in ops:
        scene = _apply(scene, op, rng)
    return scene


def _apply(scene: Scene, op: EditOp, rng: random.Random) -> Scene:
    if op.op == "restyle" and op.style:
        return scene.model_copy(update={"style": op.style})
    if op.op == "text":
        return scene.model_copy(update={"text": op.text or None})
    if op.kind is None:
        return scene
    if op.op == "remove":
        kept = [o for o in scene.objects if o.kind != op.kind]
        return scene.model_copy(update={"objects": _renumber(kept)})
    if op.op == "recolor" and op.color:
        color = op.color
        objects = [
            o.model_copy(update={"color": color, "identity": identity_of(o.kind, color, pattern_of(o))})
            if o.kind == op.kind
            else o
            for o in scene.objects
        ]
        return scene.model_copy(update={"objects": tuple(objects)})
    if op.op == "add":
        return _add(scene, op, op.kind, rng)
    if op.op == "move" and op.relation and op.other:
        return _move(scene, op.kind, op.relation, op.other, rng)
    return scene


def _renumber(objects: Sequence[SceneObject]) -> tuple[SceneObject, ...]:
    return tuple(o if o.id == i else o.model_copy(update={"id": i}) for i, o in enumerate(objects))


def _anchor(scene: Scene, kind: str | None) -> SceneObject | None:
    """The object a relation is placed against: the first of its kind."""
    return next((o for o in scene.objects if o.kind == kind), None) if kind is not None else None


def _place(
    scene: Scene,
    rng: random.Random,
    size: tuple[int, int] | None,
    relation: Relation | None,
    anchor: SceneObject | None,
    ignore: Sequence[int] = (),
) -> Box:
    """A box for one object, honouring a relation to ``anchor`` when given; overlap only as a last resort."""

    def accept(box: Box) -> bool:
        if relation is None or anchor is None:
            return True
        return relation_holds(box, anchor.box, relation, scene.width, scene.height)

    for max_overlap in (0.0, 0.1, 0.5, 1.0):
        box = free_box(scene, rng, size=size, accept=accept, ignore=ignore, max_overlap=max_overlap)
        if box is not None:
            return box
    # Only reachable when the relation cannot hold anywhere at any size: ignore it.
    box = free_box(scene, rng, size=size, ignore=ignore, max_overlap=1.0)
    return box if box is not None else (0, 0, 2, 2)


def _add(scene: Scene, op: EditOp, kind: str, rng: random.Random) -> Scene:
    existing = [o for o in scene.objects if o.kind == kind]
    count = min(op.count or 1, MAX_COUNT)
    color = op.color or (existing[0].color if existing else rng.choice(tuple(COLORS)))
    pattern = pattern_of(existing[0]) if existing and not op.color else rng.choice(PATTERNS)
    anchor = _anchor(scene, op.other)
    size = None
    if not scene.objects:
        # An empty scene (an uploaded image): size new objects as if the image held a 3x3 grid.
        size = (max(2, scene.width * 2 // 9), max(2, scene.height * 2 // 9))
    for _ in range(count):
        box = _place(scene, rng, size, op.relation, anchor)
        obj = SceneObject(
            id=len(scene.objects), kind=kind, color=color, box=box, identity=identity_of(kind, color, pattern)
        )
        scene = scene.model_copy(update={"objects": (*scene.objects, obj)})
    return scene


def _move(scene: Scene, kind: str, relation: Relation, other: str, rng: random.Random) -> Scene:
    anchor = _anchor(scene, other)
    if anchor is None:
        return scene
    # "Move the cup below the cup" moves the other cups against the first one.
    for obj in [o for o in scene.objects if o.kind == kind and o.id != anchor.id]:
        if relation_holds(obj.box, anchor.box, relation, scene.width, scene.height):
            continue
        size = (obj.box[2] - obj.box[0], obj.box[3] - obj.box[1])
        box = _place(scene, rng, size, relation, anchor, ignore=(obj.id,))
        objects = tuple(o.model_copy(update={"box": box}) if o.id == obj.id else o for o in scene.objects)
        scene = scene.model_copy(update={"objects": objects})
    return scene
