"""Perception that can be wrong: what ``inspect_image`` reports about a synthetic image.

The ground truth of a synthetic image is exact; a detector or a vision-language model looking
at a real image is not. Reflection against perfect information is string matching, so the
synthetic back end reports each image through an *observer* that makes the mistakes real
perception makes, at set rates:

- **missed objects**: an object is not seen at all;
- **count errors**: two objects of a kind are seen as one, or one is seen twice (a duplicate
  detection at the same place), so the count of a kind is off by one;
- **colour confusions**: an object's colour is read as one of the palette colours nearest to it
  in RGB (red as maroon or brown, blue as teal or purple);
- **OCR errors**: one letter of the rendered text is misread, as a look-alike letter where one
  is known (``O`` as ``Q``, ``l`` as ``i``).

Boxes are reported as drawn (a duplicate keeps the centre of the object it doubles), so a
position judged from an observation uses the same :func:`geometry.relation_holds` as the
verifier. The ground truth stored with an image is never touched: only what is reported.
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass, fields
from typing import Final

from visioncreator.tool_servers.scene import Scene, SceneObject
from visioncreator.tool_servers.synthetic.layout import identity_of, pattern_of
from visioncreator.tool_servers.synthetic.vocab import COLORS

__all__ = ["ObserverSettings", "observe"]

_CONFUSABLE_COLORS: Final[int] = 2
"""A colour is confused with one of this many palette colours nearest to it in RGB."""

_LOOKALIKES: Final[dict[str, str]] = {
    "A": "R", "B": "ER", "C": "GO", "D": "O", "E": "FB", "F": "EP", "G": "CO", "H": "N", "I": "LT", "J": "I",
    "K": "X", "L": "I", "M": "N", "N": "MH", "O": "QDC", "P": "FR", "Q": "O", "R": "PB", "S": "B", "T": "I",
    "U": "V", "V": "UY", "W": "V", "X": "K", "Y": "V", "Z": "S",
    "a": "oe", "b": "h", "c": "eo", "d": "a", "e": "co", "f": "t", "g": "q", "h": "nb", "i": "lj", "j": "i",
    "k": "h", "l": "i", "m": "n", "n": "mh", "o": "ce", "p": "q", "q": "g", "r": "n", "s": "z", "t": "f",
    "u": "vn", "v": "uy", "w": "v", "x": "k", "y": "v", "z": "s",
}  # fmt: skip
"""Letters an OCR engine reads one another as: shapes that differ by a stroke."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ObserverSettings:
    """Error rates of the synthetic back end's perception: what ``inspect_image`` gets wrong.

    Each rate is a probability in [0, 1]; 0 turns that kind of mistake off, and all four at 0
    report the exact ground truth. The defaults are moderate: on the built-in suite's scenes
    (one to six objects, sometimes a word of text) about one inspection in six reports something
    wrong, which is rare next to the injected faults collections use (30% of image calls) but
    often enough that a policy which trusts every report will sometimes redo a good image or pass
    a bad one, as it would with a real detector or vision-language judge. Reading rendered text is
    the weakest skill of such models, so OCR gets the highest rate.
    """

    miss_rate: float = 0.05
    """Probability that one object goes unseen (drawn per object)."""

    count_rate: float = 0.05
    """Probability that the number of a kind is off by one (drawn per kind seen): two objects seen
    as one, or one seen twice."""

    color_rate: float = 0.05
    """Probability that one object's colour is read as a nearby palette colour (drawn per object)."""

    ocr_rate: float = 0.1
    """Probability that the rendered text is misread by one letter (drawn per image with text)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"observer {f.name} must be a number, got {value!r}")
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"observer {f.name} must be within [0, 1], got {value}")

    @classmethod
    def exact(cls) -> ObserverSettings:
        """An observer that makes no mistakes: inspections report the ground truth."""
        return cls(miss_rate=0.0, count_rate=0.0, color_rate=0.0, ocr_rate=0.0)

    @property
    def is_exact(self) -> bool:
        """Whether every rate is 0 (inspections report the ground truth)."""
        return not (self.miss_rate or self.count_rate or self.color_rate or self.ocr_rate)


def observe(scene: Scene, rng: random.Random, settings: ObserverSettings) -> Scene:
    """What an observer with ``settings`` reports about ``scene``: a pure function of its inputs.

    Each kind of mistake draws from its own generator (seeded from ``rng`` up front), so turning
    one rate up or down leaves the other kinds of mistake where they were.

    Args:
        scene: The ground truth.
        rng: Source of randomness; the same state gives the same observation.
        settings: The error rates.

    Returns:
        The observed scene, objects renumbered in order; ``scene`` itself when the observer is exact.

    """
    if settings.is_exact:
        return scene
    miss, count, color, ocr = (random.Random(rng.getrandbits(64)) for _ in range(4))
    objects = [o for o in scene.objects if miss.random() >= settings.miss_rate]
    objects = _miscount(objects, count, settings.count_rate)
    objects = [_misread_color(o, color) if color.random() < settings.color_rate else o for o in objects]
    text = scene.text
    if text and any(c.isalpha() for c in text) and ocr.random() < settings.ocr_rate:
        text = _misread_text(text, ocr)
    renumbered = tuple(o if o.id == i else o.model_copy(update={"id": i}) for i, o in enumerate(objects))
    return scene.model_copy(update={"objects": renumbered, "text": text})


def _miscount(objects: list[SceneObject], rng: random.Random, rate: float) -> list[SceneObject]:
    """Per kind, with probability ``rate``: merge two of its objects into one, or see one twice."""
    for kind in dict.fromkeys(o.kind for o in objects):
        if rng.random() >= rate:
            continue
        of_kind = [o for o in objects if o.kind == kind]
        if len(of_kind) >= 2 and rng.random() < 0.5:
            victim = rng.choice(of_kind)
            objects = [o for o in objects if o is not victim]
        else:
            objects.append(_duplicate(rng.choice(of_kind)))
    return objects


def _duplicate(obj: SceneObject) -> SceneObject:
    """A second detection of ``obj``: a slightly smaller box with the same centre."""
    x0, y0, x1, y1 = obj.box
    dx, dy = (x1 - x0) // 10, (y1 - y0) // 10
    return obj.model_copy(update={"box": (x0 + dx, y0 + dy, x1 - dx, y1 - dy)})


def _misread_color(obj: SceneObject, rng: random.Random) -> SceneObject:
    new = rng.choice(_nearest_colors(obj.color))
    return obj.model_copy(update={"color": new, "identity": identity_of(obj.kind, new, pattern_of(obj))})


def _nearest_colors(color: str) -> list[str]:
    """The palette colours nearest to ``color`` in RGB (any palette colour for an unknown name)."""
    if color not in COLORS:
        return sorted(COLORS)
    r, g, b = COLORS[color]
    others = [c for c in COLORS if c != color]
    others.sort(key=lambda c: (COLORS[c][0] - r) ** 2 + (COLORS[c][1] - g) ** 2 + (COLORS[c][2] - b) ** 2)
    return others[:_CONFUSABLE_COLORS]


def _misread_text(text: str, rng: random.Random) -> str:
    """``text`` with one letter read as a look-alike (or, lacking one, as another letter of its case)."""
    i = rng.choice([i for i, c in enumerate(text) if c.isalpha()])
    letters = _LOOKALIKES.get(text[i]) or (string.ascii_uppercase if text[i].isupper() else string.ascii_lowercase)
    letter = rng.choice([c for c in letters if c != text[i]])
    return text[:i] + letter + text[i + 1 :]
