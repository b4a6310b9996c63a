"""Spatial relations between boxes: one definition for the renderer, the faults and the verifier.

The convention is the one compositional benchmarks (GenEval, T2I-CompBench) judge by: an object
is left or right of another only when the horizontal offset of their centres dominates the
vertical one, and above or below only when the vertical offset dominates. A diagonal layout is
therefore "above"/"below" (or "left"/"right") but never both, and a benchmark, a detector-based
judge and this verifier agree on which.
"""

from __future__ import annotations

from typing import Final

from visioncreator.tool_servers.scene import Box, Relation

__all__ = ["MIN_GAP", "NEXT_TO_DX", "NEXT_TO_DY", "center", "relation_holds"]

MIN_GAP: Final[float] = 0.05
"""Smallest offset of centres along the dominant axis, as a share of the image's size along it:
boxes with (nearly) the same centre are in no direction from each other."""

NEXT_TO_DX: Final[float] = 0.45
"""``next_to``: largest horizontal offset of centres, as a share of the image width."""

NEXT_TO_DY: Final[float] = 0.25
"""``next_to``: largest vertical offset of centres, as a share of the image height."""


def center(box: Box) -> tuple[float, float]:
    """The centre of a box."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2


def relation_holds(a: Box, b: Box, relation: Relation, width: int, height: int) -> bool:
    """Whether box ``a`` stands in ``relation`` to box ``b`` in an image of the given size.

    With ``dx``, ``dy`` the offset of ``a``'s centre from ``b``'s, in pixels:

    - ``left_of``/``right_of``: the horizontal offset dominates (``|dx| > |dy|``) and is at least
      :data:`MIN_GAP` of the width, to the left (``dx < 0``) or to the right;
    - ``above``/``below``: the vertical offset dominates (``|dy| > |dx|``) and is at least
      :data:`MIN_GAP` of the height, upwards (``dy < 0``, image rows grow downwards) or downwards;
    - ``next_to``: centres within :data:`NEXT_TO_DX` of the width horizontally and
      :data:`NEXT_TO_DY` of the height vertically, in any direction.

    So at most one of the four directions holds for a pair, and a diagonal offset counts for
    the axis along which it is larger.
    """
    ax, ay = center(a)
    bx, by = center(b)
    dx, dy = ax - bx, ay - by
    if relation == "left_of":
        return -dx >= MIN_GAP * width and abs(dx) > abs(dy)
    if relation == "right_of":
        return dx >= MIN_GAP * width and abs(dx) > abs(dy)
    if relation == "above":
        return -dy >= MIN_GAP * height and abs(dy) > abs(dx)
    if relation == "below":
        return dy >= MIN_GAP * height and abs(dy) > abs(dx)
    return abs(dx) <= NEXT_TO_DX * width and abs(dy) <= NEXT_TO_DY * height
