"""Fault injection: make a synthetic image wrong on purpose, in a way the verifier can see.

Each fault breaks exactly the kind of checklist item it is named after (an object, count,
colour, position, text or consistency item), so that a reflecting policy has something real
to catch and the ground truth records what it should have caught.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Final, get_args

from visioncreator.tool_servers.scene import Box, Fault, FaultType, RelationSpec, Scene, SceneObject, SceneSpec
from visioncreator.tool_servers.synthetic.geometry import center, relation_holds
from visioncreator.tool_servers.synthetic.layout import free_box, identity_of, pattern_of
from visioncreator.tool_servers.synthetic.vocab import COLORS, MAX_COUNT, PATTERNS

__all__ = ["ALL_FAULTS", "inject"]

ALL_FAULTS: Final[tuple[FaultType, ...]] = get_args(FaultType)

_Outcome = tuple[Scene, Fault] | None
_Attempt = Callable[[], _Outcome]


def inject(
    scene: Scene,
    spec: SceneSpec | None,
    rng: random.Random,
    rate: float,
    allowed: Collection[FaultType],
    references: Sequence[Scene] = (),
    *,
    counted: Collection[str] | None = None,
    draw: float | None = None,
) -> tuple[Scene, tuple[Fault, ...]]:
    """With probability ``rate``, apply one fault that fits this scene and request.

    Whether a fault happens and which one are separate draws: the back end pre-draws the first
    (``draw``) from the call's seed and tool only, so that calls sharing a seed share the decision
    whatever their prompts (common random numbers), while the fault's type and details come from
    ``rng``, the prompt's own generator.

    Args:
        scene: The correct scene.
        spec: What was asked for; faults only concern requested kinds, colours, relations, text.
        rng: Source of randomness.
        rate: Probability of a fault, 0 to 1.
        allowed: Fault types that may be chosen.
        references: Scenes whose objects this one must keep the identity of (references of
            ``reference_to_image``, the preserved part of an edited image); enables identity_drift.
        counted: Requested kinds whose number the checklist checks (dropped_object and
            wrong_count only concern these); None means every requested kind.
        draw: A uniform number in [0, 1): a fault happens when it is below ``rate``. None draws it
            from ``rng``.

    Returns:
        The (possibly changed) scene and the faults applied: none or one.

    """
    if draw is not None and not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be a uniform number in [0, 1), got {draw}")
    # The prompt's generator is advanced either way, so that a pre-drawn decision leaves the
    # fault type and details as they were.
    own = rng.random() if rate > 0 else 1.0
    if rate <= 0 or (own if draw is None else draw) >= rate:
        return scene, ()
    spec = spec or SceneSpec()
    by_type: dict[FaultType, list[_Attempt]] = {t: [] for t in ALL_FAULTS if t in allowed}
    present = {o.kind for o in scene.objects}
    requested = [o.kind for o in spec.objects if o.kind in present and (counted is None or o.kind in counted)]
    colored = {o.kind for o in spec.objects if o.color is not None}

    def add(fault: FaultType, attempt: _Attempt) -> None:
        if fault in by_type:
            by_type[fault].append(attempt)

    for kind in dict.fromkeys(requested):
        add("dropped_object", partial(_drop, scene, kind, rng))
        add("wrong_count", partial(_recount, scene, kind, rng))
    names: dict[str, set[str | None]] = {}
    for obj_spec in spec.objects:
        names.setdefault(obj_spec.kind, set()).add(obj_spec.color)
    for kind, kind_colors in names.items():
        # Only a kind asked for in one colour has a colour to get wrong ("a red and a green apple" has not).
        if len(kind_colors) == 1 and None not in kind_colors and kind in present:
            add("wrong_color", partial(_recolor, scene, kind, rng))
    for rel in spec.relations:
        add("swapped_position", partial(_swap, scene, rel))
    if spec.text is not None and scene.text and any(c.isalpha() for c in scene.text):
        add("misspelled_text", partial(_misspell, scene, rng))
    referenced = {o.kind for ref in references for o in ref.objects}
    for kind in dict.fromkeys(o.kind for o in scene.objects if o.kind in referenced):
        add("identity_drift", partial(_drift, scene, kind, rng, kind not in colored, references))

    types = [t for t, attempts in by_type.items() if attempts]
    rng.shuffle(types)
    for fault in types:
        attempts = by_type[fault]
        rng.shuffle(attempts)
        for attempt in attempts:
            outcome = attempt()
            if outcome is not None:
                return outcome[0], (outcome[1],)
    return scene, ()


def _renumber(objects: Sequence[SceneObject]) -> tuple[SceneObject, ...]:
    return tuple(o if o.id == i else o.model_copy(update={"id": i}) for i, o in enumerate(objects))


def _drop(scene: Scene, kind: str, rng: random.Random) -> _Outcome:
    of_kind = [o for o in scene.objects if o.kind == kind]
    victim = rng.choice(of_kind)
    kept = _renumber([o for o in scene.objects if o is not victim])
    fault = Fault(type="dropped_object", subject=kind, detail=f"{kind}: {len(of_kind)} -> {len(of_kind) - 1}")
    return scene.model_copy(update={"objects": kept}), fault


def _recount(scene: Scene, kind: str, rng: random.Random) -> _Outcome:
    of_kind = [o for o in scene.objects if o.kind == kind]
    n = len(of_kind)
    if n < MAX_COUNT and (n < 2 or rng.random() < 0.5):
        model = of_kind[0]
        size = (model.box[2] - model.box[0], model.box[3] - model.box[1])
        box = free_box(scene, rng, size=size) or free_box(scene, rng, size=size, max_overlap=0.15)
        if box is not None:
            extra = model.model_copy(update={"id": len(scene.objects), "box": box})
            fault = Fault(type="wrong_count", subject=kind, detail=f"{kind}: {n} -> {n + 1}")
            return scene.model_copy(update={"objects": (*scene.objects, extra)}), fault
    if n < 2:
        return None
    victim = rng.choice(of_kind)
    kept = _renumber([o for o in scene.objects if o is not victim])
    fault = Fault(type="wrong_count", subject=kind, detail=f"{kind}: {n} -> {n - 1}")
    return scene.model_copy(update={"objects": kept}), fault


def _recolor(scene: Scene, kind: str, rng: random.Random) -> _Outcome:
    old = next(o.color for o in scene.objects if o.kind == kind)
    choices = [c for c in COLORS if c not in (old, scene.background)]
    new = rng.choice(choices)
    objects = tuple(
        o.model_copy(update={"color": new, "identity": identity_of(kind, new, pattern_of(o))}) if o.kind == kind else o
        for o in scene.objects
    )
    fault = Fault(type="wrong_color", subject=kind, detail=f"{kind}: {old} -> {new}")
    return scene.model_copy(update={"objects": objects}), fault


def _swap(scene: Scene, rel: RelationSpec) -> _Outcome:
    """Rearrange the related objects so that no subject stands in the relation to any object."""
    if rel.subject == rel.object:
        return None
    subjects = [o for o in scene.objects if o.kind == rel.subject]
    others = [o for o in scene.objects if o.kind == rel.object]
    if not subjects or not others:
        return None
    boxes = [o.box for o in (*subjects, *others)]
    # Sort the pooled boxes so that the subjects get the end opposite to what was asked.
    keys: dict[str, Callable[[Box], float]] = {
        "left_of": lambda b: -center(b)[0],
        "right_of": lambda b: center(b)[0],
        "above": lambda b: -center(b)[1],
        "below": lambda b: center(b)[1],
        "next_to": lambda b: center(b)[0] + center(b)[1],
    }
    boxes.sort(key=keys[rel.relation])
    moved = {id(o): box for o, box in zip((*subjects, *others), boxes, strict=True)}
    objects = tuple(o.model_copy(update={"box": moved[id(o)]}) if id(o) in moved else o for o in scene.objects)
    new_subjects = [o for o in objects if o.kind == rel.subject]
    new_others = [o for o in objects if o.kind == rel.object]
    if any(
        relation_holds(s.box, t.box, rel.relation, scene.width, scene.height) for s in new_subjects for t in new_others
    ):
        return None
    fault = Fault(
        type="swapped_position",
        subject=rel.subject,
        detail=f"{rel.subject} no longer {rel.relation.replace('_', ' ')} {rel.object}",
    )
    return scene.model_copy(update={"objects": objects}), fault


def _misspell(scene: Scene, rng: random.Random) -> _Outcome:
    text = scene.text or ""
    positions = [i for i, c in enumerate(text) if c.isalpha()]
    i = rng.choice(positions)
    letters = string.ascii_uppercase if text[i].isupper() else string.ascii_lowercase
    letter = rng.choice([c for c in letters if c != text[i]])
    new = text[:i] + letter + text[i + 1 :]
    fault = Fault(type="misspelled_text", subject=None, detail=f"text: {text!r} -> {new!r}")
    return scene.model_copy(update={"text": new}), fault


def _drift(scene: Scene, kind: str, rng: random.Random, recolor: bool, references: Sequence[Scene]) -> _Outcome:
    """A new pattern for every object of ``kind`` and, unless its colour was asked for, a new colour.

    The colour change is what a ``preserved`` item (kind and colour) can see; the pattern
    change is what a ``consistency`` item (identity) sees even when the colour must stay.
    """
    first = next(o for o in scene.objects if o.kind == kind)
    old_pattern = pattern_of(first)
    # A pattern no reference object of this kind has, so that the drift cannot land on a match.
    seen = {pattern_of(o) for ref in references for o in ref.objects if o.kind == kind} | {old_pattern}
    pattern = rng.choice([p for p in PATTERNS if p not in seen] or [p for p in PATTERNS if p != old_pattern])
    color = first.color
    if recolor:
        color = rng.choice([c for c in COLORS if c not in (first.color, scene.background)])
    objects = tuple(
        o.model_copy(update={"color": color, "identity": identity_of(kind, color, pattern)}) if o.kind == kind else o
        for o in scene.objects
    )
    new_identity = identity_of(kind, color, pattern)
    fault = Fault(type="identity_drift", subject=kind, detail=f"{kind}: {first.identity} -> {new_identity}")
    return scene.model_copy(update={"objects": objects}), fault
