"""No-reference image quality: BRISQUE from ``brisque`` 0.2.0, patched for numpy 2 here, not in site-packages."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from PIL import Image

from visioncreator.tool_servers.detectors._common import Lazy, downscale, require
from visioncreator.tool_servers.detectors.settings import DetectorSettings
from visioncreator.tool_servers.errors import ToolServerError

__all__ = ["REQUIRES", "QualityUnavailable", "brisque_score"]

REQUIRES = ("brisque", "cv2", "scipy", "skimage", "libsvm")
"""Modules this detector needs."""


class QualityUnavailable(ToolServerError, ValueError):
    """The image gives BRISQUE nothing to measure (e.g. a flat colour)."""


def _scorer() -> Any:
    with warnings.catch_warnings():
        # brisque imports the deprecated ``scipy.ndimage.filters``; not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        base = require("brisque").BRISQUE

    class _Brisque(base):  # type: ignore[valid-type,misc]
        """BRISQUE whose features are plain floats.

        Under numpy 2 the upstream features are one-element arrays that its scaling step turns
        into floats with ``float(array)``, which numpy 2 refuses for arrays that are not 0-d.
        """

        def calculate_brisque_features(self, image: Any, kernel_size: int = 7, sigma: float = 7 / 6) -> Any:
            features = super().calculate_brisque_features(image, kernel_size=kernel_size, sigma=sigma)
            flat = np.array([np.asarray(f, dtype=np.float64).reshape(-1)[0] for f in features])
            if not np.isfinite(flat).all():
                # A flat image has zero local deviation: there is no distortion statistic to fit.
                raise QualityUnavailable("image too uniform to score")
            return flat

    return _Brisque(url=False)


_SCORER: Lazy[Any] = Lazy(_scorer)


def brisque_score(image: Image.Image, settings: DetectorSettings) -> float:
    """BRISQUE score clipped to [0, 100]: lower is cleaner.

    Raises:
        QualityUnavailable: the image is too uniform to score.
    """
    small, _ = downscale(image, settings.quality_max_side)
    pixels = np.asarray(small)
    with _SCORER.lock, np.errstate(all="ignore"), warnings.catch_warnings():
        # A flat image divides by a zero deviation; the features are checked for that above.
        warnings.simplefilter("ignore", RuntimeWarning)
        score = float(_SCORER.get().score(pixels))
    if not math.isfinite(score):
        raise QualityUnavailable("image too uniform to score")
    return round(min(max(score, 0.0), 100.0), 3)
