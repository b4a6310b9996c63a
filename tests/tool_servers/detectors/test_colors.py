from __future__ import annotations

import pytest
from PIL import Image

from visioncreator.tool_servers.detectors import DetectorSettings
from visioncreator.tool_servers.detectors.colors import color_stats
from visioncreator.tool_servers.synthetic.vocab import COLORS

SETTINGS = DetectorSettings()


@pytest.mark.parametrize("name", sorted(COLORS))
def test_a_flat_vocabulary_colour_is_named_as_itself(name: str) -> None:
    stats = color_stats(Image.new("RGB", (40, 30), COLORS[name]), SETTINGS)
    assert [(c.name, c.fraction) for c in stats.dominant] == [(name, 1.0)]
    assert stats.contrast == 0.0


def test_near_colours_get_the_nearest_name() -> None:
    assert color_stats(Image.new("RGB", (10, 10), (0, 0, 255)), SETTINGS).dominant[0].name == "blue"
    assert color_stats(Image.new("RGB", (10, 10), (255, 0, 0)), SETTINGS).dominant[0].name == "red"
    assert color_stats(Image.new("RGB", (10, 10), (0, 0, 0)), SETTINGS).dominant[0].name == "black"


def test_shares_brightness_contrast_and_saturation() -> None:
    image = Image.new("RGB", (200, 100), (250, 250, 250))
    image.paste((20, 20, 20), (0, 0, 50, 100))  # a quarter black
    stats = color_stats(image, SETTINGS)
    shares = {c.name: c.fraction for c in stats.dominant}
    assert shares == pytest.approx({"white": 0.75, "black": 0.25}, abs=0.02)
    assert stats.brightness == pytest.approx((0.75 * 250 + 0.25 * 20) / 255, abs=0.01)
    assert stats.contrast > 0.3
    assert stats.saturation == 0.0
    vivid = color_stats(Image.new("RGB", (10, 10), (255, 0, 0)), SETTINGS)
    assert vivid.saturation == 1.0


def test_small_shares_and_the_count_are_bounded() -> None:
    image = Image.new("RGB", (100, 100), COLORS["green"])
    image.paste(COLORS["red"], (0, 0, 10, 10))  # 1 %: under color_min_fraction
    assert [c.name for c in color_stats(image, SETTINGS).dominant] == ["green"]
    stripes = Image.new("RGB", (len(COLORS) * 10, 10))
    for i, rgb in enumerate(COLORS.values()):
        stripes.paste(rgb, (i * 10, 0, i * 10 + 10, 10))
    few = color_stats(stripes, DetectorSettings(color_max_count=3, color_min_fraction=0.0))
    assert len(few.dominant) == 3


def test_a_large_image_is_downscaled_first() -> None:
    image = Image.new("RGB", (4000, 3000), COLORS["navy"])
    assert color_stats(image, SETTINGS).dominant[0].name == "navy"


@pytest.mark.parametrize(
    "overrides", [{"color_max_side": 8}, {"color_min_fraction": 1.5}, {"labels_top_k": 0}, {"ocr_threads": 0}]
)
def test_settings_reject_out_of_range_limits(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        DetectorSettings(**overrides)  # type: ignore[arg-type]
