from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from visioncreator.tool_servers.detectors import DetectorSettings
from visioncreator.tool_servers.detectors.quality import QualityUnavailable, brisque_score

pytest.importorskip("brisque")
SETTINGS = DetectorSettings()


def _noisy(image: Image.Image, sigma: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noise = np.random.default_rng(0).normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def test_a_clean_photo_scores_low(astronaut: Image.Image) -> None:
    score = brisque_score(astronaut, SETTINGS)
    assert 0.0 <= score <= 30.0


def test_noise_and_blur_score_worse_than_the_clean_photo(astronaut: Image.Image) -> None:
    clean = brisque_score(astronaut, SETTINGS)
    assert brisque_score(_noisy(astronaut, 40.0), SETTINGS) > clean + 20
    assert brisque_score(astronaut.filter(ImageFilter.GaussianBlur(4)), SETTINGS) > clean + 20


def test_a_large_image_is_scored_on_a_bounded_copy(astronaut: Image.Image) -> None:
    big = astronaut.resize((2048, 2048), Image.Resampling.BICUBIC)
    assert 0.0 <= brisque_score(big, SETTINGS) <= 100.0


def test_a_flat_image_cannot_be_scored() -> None:
    with pytest.raises(QualityUnavailable, match="uniform"):
        brisque_score(Image.new("RGB", (128, 128), (30, 90, 200)), SETTINGS)
