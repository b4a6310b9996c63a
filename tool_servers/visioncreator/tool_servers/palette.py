"""The named colour palette: what the synthetic renderer draws with and what the detectors name colours by."""

from __future__ import annotations

from typing import Final

__all__ = ["COLORS"]

COLORS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "orange": (245, 140, 30), "purple": (140, 60, 180), "pink": (245, 130, 190), "brown": (130, 80, 40),
    "black": (20, 20, 20), "white": (250, 250, 250), "gray": (128, 128, 128), "cyan": (40, 200, 220),
    "magenta": (210, 40, 170), "teal": (20, 128, 128), "navy": (20, 30, 110), "gold": (212, 175, 55),
    "silver": (192, 192, 200), "beige": (225, 205, 170), "maroon": (120, 20, 40), "lime": (150, 230, 40),
}  # fmt: skip
"""Colour name -> the RGB it is drawn with."""
