"""Spatial relations between boxes: one definition for the renderer and the verifier."""

from __future__ import annotations

from visioncreator.tool_servers.scene import Box, Relation


def center(box: Box) -> tuple[float, float]:
    """The centre of a box."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2


def relation_holds(a: Box, b: Box, relation: Relation, width: int, height: int) -> bool:
    """Whether box ``a`` stands in ``relation`` to box ``b`` in an image of the given size.

    ``left_of``/``right_of`` need a horizontal gap of centres of at least 5% of the width
    and a vertical offset of at most half the height; ``above``/``below`` the same with axes
    swapped; ``next_to`` needs centres within 45% of the width horizontally and 25% of the
    height vertically.
    """
    ax, ay = center(a)
    bx, by = center(b)
    dx, dy = ax - bx, ay - by
    if relation == "left_of":
        return dx <= -0.05 * width and abs(dy) <= 0.5 * height
    if relation == "right_of":
        return dx >= 0.05 * width and abs(dy) <= 0.5 * height
    if relation == "above":
        return dy <= -0.05 * height and abs(dx) <= 0.5 * width
    if relation == "below":
        return dy >= 0.05 * height and abs(dx) <= 0.5 * width
    return abs(dx) <= 0.45 * width and abs(dy) <= 0.25 * height
