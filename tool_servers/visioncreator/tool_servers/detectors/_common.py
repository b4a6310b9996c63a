"""Helpers every detector shares: optional imports, a load-once cache, bounded downscaling."""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Generic, TypeVar

from PIL import Image

T = TypeVar("T")


class Absent(ImportError):
    """A package a detector needs is not installed."""


def installed(*modules: str) -> bool:
    """Whether every module can be imported, without importing it.

    ``find_spec`` answers None for a module set to None in ``sys.modules``, which is how a
    test hides a package that is installed.
    """
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


def require(name: str) -> ModuleType:
    """Import an optional package; a missing one raises ``Absent``.

    Imported by name so that type checking does not need the package or its stubs.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise Absent(name) from exc


class Lazy(Generic[T]):
    """A value built once per process, on first use, under a lock; also serialises its users."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self.lock = threading.RLock()

    def get(self) -> T:
        """The value, building it the first time."""
        with self.lock:
            if self._value is None:
                self._value = self._build()
            return self._value


def downscale(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """An RGB copy whose longest side is at most ``max_side``, and the factor back to the original."""
    rgb = image.convert("RGB")
    longest = max(rgb.size)
    if longest <= max_side:
        return rgb, 1.0
    factor = longest / max_side
    size = (max(1, round(rgb.width / factor)), max(1, round(rgb.height / factor)))
    return rgb.resize(size, Image.Resampling.BILINEAR), factor


def scale_box(xywh: Sequence[float], factor: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """An ``x, y, w, h`` box on a downscaled copy as ``x0, y0, x1, y1`` on the original, clipped."""
    x, y, w, h = (float(v) for v in xywh)
    width, height = size
    x0 = min(max(round(x * factor), 0), width)
    y0 = min(max(round(y * factor), 0), height)
    x1 = min(max(round((x + w) * factor), 0), width)
    y1 = min(max(round((y + h) * factor), 0), height)
    return x0, y0, x1, y1
