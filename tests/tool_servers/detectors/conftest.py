"""Real photos for the detector tests, from scikit-image's bundled data (no download).

``astronaut`` (NASA, public domain) has one frontal face; ``chelsea`` (a cat) and ``coffee``
(an espresso cup) are CC0. scikit-image comes with ``brisque``, in the ``detectors`` extra.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def _photo(name: str) -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    return _photo("astronaut")


@pytest.fixture(scope="session")
def chelsea() -> Image.Image:
    return _photo("chelsea")


@pytest.fixture(scope="session")
def coffee() -> Image.Image:
    return _photo("coffee")
