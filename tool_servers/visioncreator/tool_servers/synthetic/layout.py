"""Scene layout: a ``SceneSpec`` becomes a ``Scene`` (objects with boxes, colours and identities).

Layout puts objects on a grid of cells, so that up to a few dozen objects fit without
overlapping, and places the objects named by relations first, by a randomised backtracking
search over cells that is complete for any consistent set of relations.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

from visioncreator.tool_servers.scene import Box, ObjectSpec, RelationSpec, Scene, SceneObject, SceneSpec
from visioncreator.tool_servers.synthetic.geometry import relation_holds
from visioncreator.tool_servers.synthetic.vocab import COLORS, PATTERNS

__all__ = ["banner_height", "free_box", "identity_of", "layout", "pattern_of", "scene_area"]

_Cell = tuple[float, float, float, float]
_Key = tuple[str, int]
_JITTER_TRIES: Final[int] = 4
_SEARCH_NODES: Final[int] = 20_000
# Grids tried in turn when relations do not fit the first: (extra columns, extra rows).
_GRID_GROWTH: Final[tuple[tuple[int, int], ...]] = ((0, 0), (0, 2), (2, 0), (2, 2))
_FREE_TRIES: Final[int] = 40


def identity_of(kind: str, color: str, pattern: str) -> str:
    """The appearance signature of an object: ``kind:color:pattern``."""
    return f"{kind}:{color}:{pattern}"


def pattern_of(obj: SceneObject) -> str:
    """The pattern part of an object's identity (``plain`` when the identity has none)."""
    parts = obj.identity.rsplit(":", 1)
    return parts[1] if len(parts) == 2 and parts[1] in PATTERNS else "plain"


def banner_height(height: int) -> int:
    """Height of the text banner at the bottom of an image of the given height."""
    return max(14, height // 10)


def scene_area(scene: Scene) -> tuple[int, int]:
    """Width and height of the part of the image where objects go (above any text banner)."""
    return scene.width, scene.height - (banner_height(scene.height) if scene.text else 0)


def layout(
    spec: SceneSpec,
    width: int,
    height: int,
    rng: random.Random,
    identities: Mapping[str, SceneObject] | None = None,
) -> Scene:
    """Place the objects a spec asks for in an image of the given size.

    Args:
        spec: What to show.
        width: Image width in pixels.
        height: Image height in pixels.
        rng: The only source of randomness; the same state gives the same scene.
        identities: Reference objects by kind; a new object of that kind copies the reference's
            colour (unless the spec names a colour) and pattern.

    Returns:
        The scene, with every satisfiable relation of ``spec`` holding per ``relation_holds``.

    """
    identities = identities or {}
    groups = list(spec.objects)
    named = {g.kind for g in groups}
    for rel in spec.relations:
        # A relation about a kind nobody asked for still needs something to relate to.
        for kind in (rel.subject, rel.object):
            if kind not in named:
                groups.append(ObjectSpec(kind=kind))
                named.add(kind)
    looks: list[tuple[str, str]] = []
    for group in groups:
        ref = identities.get(group.kind)
        color = group.color or (ref.color if ref else rng.choice(tuple(COLORS)))
        pattern = pattern_of(ref) if ref else rng.choice(PATTERNS)
        looks.append((color, pattern))
    used = {color for color, _ in looks}
    backgrounds = [c for c in COLORS if c not in used] or list(COLORS)
    background = rng.choice(backgrounds)

    area_h = height - (banner_height(height) if spec.text else 0)
    counts: dict[str, int] = {}
    for group in groups:
        counts[group.kind] = counts.get(group.kind, 0) + group.count
    # "A dog next to a dog" relates two dogs; with a single dog it cannot hold.
    relations = [r for r in spec.relations if r.subject != r.object or counts[r.subject] >= 2]
    total = sum(g.count for g in groups)
    cells, anchors = _cells_and_anchors(relations, total + (2 if relations else 0), width, area_h, height, rng)
    boxes = _place(groups, relations, cells, anchors, width, height, rng)
    objects: list[SceneObject] = []
    for group, (color, pattern) in zip(groups, looks, strict=True):
        for i in range(group.count):
            objects.append(
                SceneObject(
                    id=len(objects),
                    kind=group.kind,
                    color=color,
                    box=boxes[(group.kind, i)],
                    identity=identity_of(group.kind, color, pattern),
                )
            )
    return Scene(
        width=width,
        height=height,
        style=spec.style or "photo",
        background=background,
        objects=tuple(objects),
        text=spec.text,
    )


def _cells_and_anchors(
    relations: Sequence[RelationSpec], n_cells: int, width: int, area_h: int, height: int, rng: random.Random
) -> tuple[list[_Cell], dict[_Key, int]]:
    """The grid and the cells of the related objects: the coarsest grid on which the relations hold.

    A coarse grid can make consistent relations unsatisfiable ("a dog left of a car, the car
    above a tree, the tree next to the dog" needs a row for dog and car, a column for car and
    tree, and rows close enough for next_to), so finer grids are tried in turn.
    """
    first = _grid(n_cells, width, area_h, min_grid=bool(relations))
    if not relations:
        return first, {}
    for extra_cols, extra_rows in _GRID_GROWTH:
        cells = _grid(n_cells, width, area_h, min_grid=True, extra=(extra_cols, extra_rows))
        found = _anchor_cells(relations, cells, width, height, rng)
        if found is not None:
            return cells, found
    # Contradictory relations (a left of b and b left of a): place the kinds anyway.
    keys = list(dict.fromkeys(key for rel in relations for key in _relation_keys(rel)))
    order = list(range(len(first)))
    rng.shuffle(order)
    return first, {key: order[i] for i, key in enumerate(keys)}


def _grid(cells: int, width: int, height: int, *, min_grid: bool, extra: tuple[int, int] = (0, 0)) -> list[_Cell]:
    cells = max(cells, 1)
    cols = max(1, min(cells, round(math.sqrt(cells * width / max(height, 1))))) + extra[0]
    if min_grid:
        # next_to needs three columns (two adjacent centres closer than 45% of the width);
        # above/below need two rows. Left/right pairs share a row and above/below pairs a
        # column, so the offset along the other axis is zero and the relation's axis dominates.
        cols = max(cols, 3)
    rows = max(math.ceil(cells / cols), 2 if min_grid else 1) + extra[1]
    cw, ch = width / cols, height / rows
    return [(c * cw, r * ch, (c + 1) * cw, (r + 1) * ch) for r in range(rows) for c in range(cols)]


def _place(
    groups: Sequence[ObjectSpec],
    relations: Sequence[RelationSpec],
    cells: list[_Cell],
    anchors: Mapping[_Key, int],
    width: int,
    height: int,
    rng: random.Random,
) -> dict[_Key, Box]:
    """Boxes for every object, keyed by (kind, index within its group), the related ones at ``anchors``."""
    taken = set(anchors.values())
    free = [i for i in range(len(cells)) if i not in taken]
    rng.shuffle(free)
    assigned: dict[_Key, int] = dict(anchors)
    for group in groups:
        for i in range(group.count):
            if (group.kind, i) not in assigned:
                assigned[(group.kind, i)] = free.pop()
    for _ in range(_JITTER_TRIES):
        boxes = {key: _jitter(cells[cell], rng) for key, cell in assigned.items()}
        if _relations_hold(relations, boxes, width, height):
            return boxes
    # Centred boxes keep the cell centres, for which the search guaranteed the relations.
    boxes = {key: _centred(cells[cell]) for key, cell in assigned.items()}
    return boxes


def _anchor_cells(
    relations: Sequence[RelationSpec], cells: list[_Cell], width: int, height: int, rng: random.Random
) -> dict[_Key, int] | None:
    """Cells for the first object of each related kind, by randomised backtracking; None if there are none."""
    keys = list(dict.fromkeys(key for rel in relations for key in _relation_keys(rel)))
    # Judged on the centred boxes: the fallback of ``_place``, so the guarantee is exact for it.
    boxes = [_centred(c) for c in cells]
    order = list(range(len(cells)))
    rng.shuffle(order)
    budget = [_SEARCH_NODES]

    def consistent(assign: dict[_Key, int]) -> bool:
        for rel in relations:
            s_key, o_key = _relation_keys(rel)
            s, o = assign.get(s_key), assign.get(o_key)
            if s is not None and o is not None and not relation_holds(boxes[s], boxes[o], rel.relation, width, height):
                return False
        return True

    def search(assign: dict[_Key, int], depth: int) -> dict[_Key, int] | None:
        if depth == len(keys):
            return dict(assign)
        used = set(assign.values())
        for cell in order:
            budget[0] -= 1
            if budget[0] < 0:
                return None
            if cell in used:
                continue
            assign[keys[depth]] = cell
            if consistent(assign):
                found = search(assign, depth + 1)
                if found is not None:
                    return found
            del assign[keys[depth]]
        return None

    return search({}, 0)


def _relation_keys(rel: RelationSpec) -> tuple[_Key, _Key]:
    """The objects a relation is laid out for: the first of each kind (the first two if one kind)."""
    return (rel.subject, 0), (rel.object, 1 if rel.object == rel.subject else 0)


def _jitter(cell: _Cell, rng: random.Random) -> Box:
    x0, y0, x1, y1 = cell
    cw, ch = x1 - x0, y1 - y0
    bw, bh = cw * rng.uniform(0.62, 0.86), ch * rng.uniform(0.62, 0.86)
    bx, by = x0 + rng.uniform(0, cw - bw), y0 + rng.uniform(0, ch - bh)
    return _clamp_box(bx, by, bx + bw, by + bh)


def _centred(cell: _Cell) -> Box:
    x0, y0, x1, y1 = cell
    mx, my = (x1 - x0) * 0.125, (y1 - y0) * 0.125
    return _clamp_box(x0 + mx, y0 + my, x1 - mx, y1 - my)


def _clamp_box(x0: float, y0: float, x1: float, y1: float) -> Box:
    ix0, iy0 = round(x0), round(y0)
    return ix0, iy0, max(round(x1), ix0 + 2), max(round(y1), iy0 + 2)


def _relations_hold(relations: Sequence[RelationSpec], boxes: Mapping[_Key, Box], width: int, height: int) -> bool:
    keys = [_relation_keys(r) for r in relations]
    return all(
        relation_holds(boxes[s], boxes[o], r.relation, width, height) for r, (s, o) in zip(relations, keys, strict=True)
    )


def _overlap(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1)


def free_box(
    scene: Scene,
    rng: random.Random,
    *,
    size: tuple[int, int] | None = None,
    accept: Callable[[Box], bool] | None = None,
    ignore: Collection[int] = (),
    max_overlap: float = 0.0,
) -> Box | None:
    """A box for one more object: inside the object area, overlapping others little.

    Tries random positions, then a deterministic scan, shrinking the box when nothing fits.

    Args:
        scene: The scene to add to.
        rng: Source of randomness.
        size: Preferred width and height; by default the median size of the scene's objects.
        accept: Extra condition on the box (e.g. a relation to another object).
        ignore: Ids of objects whose boxes do not count as obstacles (an object being moved).
        max_overlap: Largest allowed intersection with another box, as a share of the smaller box.

    Returns:
        The box, or None when nothing fits even at an eighth of the size.

    """
    area_w, area_h = scene_area(scene)
    others = [o.box for o in scene.objects if o.id not in ignore]
    if size is None:
        if others:
            ws = sorted(b[2] - b[0] for b in others)
            hs = sorted(b[3] - b[1] for b in others)
            size = (ws[len(ws) // 2], hs[len(hs) // 2])
        else:
            size = (area_w // 3, area_h // 3)
    bw, bh = size
    for _ in range(4):
        bw, bh = max(min(bw, area_w), 2), max(min(bh, area_h), 2)

        def fits(box: Box) -> bool:
            if any(_overlap(box, other) > max_overlap for other in others):
                return False
            return accept is None or accept(box)

        for _ in range(_FREE_TRIES):
            x, y = rng.randint(0, area_w - bw), rng.randint(0, area_h - bh)
            if fits(box := (x, y, x + bw, y + bh)):
                return box
        step_x, step_y = max(1, bw // 4), max(1, bh // 4)
        for y in range(0, area_h - bh + 1, step_y):
            for x in range(0, area_w - bw + 1, step_x):
                if fits(box := (x, y, x + bw, y + bh)):
                    return box
        bw, bh = bw // 2, bh // 2
    return None


# --- drawing -------------------------------------------------------------------------------
