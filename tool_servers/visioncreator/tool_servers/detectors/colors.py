"""Colour statistics with numpy only: dominant named colours, brightness, contrast, saturation."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visioncreator.tool_servers.detectors._common import downscale
from visioncreator.tool_servers.detectors.settings import DetectorSettings
from visioncreator.tool_servers.palette import COLORS
from visioncreator.tool_servers.schemas import ColorShare, ColorStats

__all__ = ["color_stats"]

_NAMES = tuple(COLORS)


def _to_lab(rgb: NDArray[np.float64]) -> NDArray[np.float64]:
    """Convert sRGB in [0, 1] (..., 3) to CIELAB (D65): nearest-colour search is fairer there than in RGB."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


_PALETTE_LAB = _to_lab(np.array([COLORS[name] for name in _NAMES], dtype=np.float64) / 255.0)


def color_stats(image: Image.Image, settings: DetectorSettings) -> ColorStats:
    """Dominant colours (named from the project's vocabulary) and global tone statistics."""
    small, _ = downscale(image, settings.color_max_side)
    rgb = np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255.0
    distances = np.linalg.norm(_to_lab(rgb)[:, None, :] - _PALETTE_LAB[None, :, :], axis=-1)
    shares = np.bincount(distances.argmin(axis=1), minlength=len(_NAMES)) / len(rgb)
    order = np.argsort(-shares, kind="stable")
    dominant = [
        ColorShare(name=_NAMES[i], fraction=round(float(shares[i]), 4))
        for i in order[: settings.color_max_count]
        if shares[i] >= settings.color_min_fraction
    ]
    luma = rgb @ np.array([0.2126, 0.7152, 0.0722])
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-12), 0.0)
    return ColorStats(
        dominant=dominant,
        brightness=round(float(np.clip(luma.mean(), 0.0, 1.0)), 4),
        contrast=round(float(np.clip(luma.std(), 0.0, 1.0)), 4),
        saturation=round(float(np.clip(saturation.mean(), 0.0, 1.0)), 4),
    )
