from __future__ import annotations

import pytest
from PIL import Image
from tests.tool_servers.detectors._images import squash, text_image

from visioncreator.tool_servers.detectors import DetectorSettings
from visioncreator.tool_servers.detectors.ocr import read_text

pytest.importorskip("rapidocr_onnxruntime")
SETTINGS = DetectorSettings()


def test_reads_rendered_text_with_its_box() -> None:
    lines = read_text(text_image("HELLO WORLD 42"), SETTINGS)
    assert [squash(line.text) for line in lines] == ["HELLOWORLD42"]
    (line,) = lines
    assert line.confidence > 0.8
    # Drawn at (20, 60) in a 48 px font: about 400 px wide and 40 px tall.
    assert line.box == pytest.approx((20, 68, 424, 112), abs=20)


def test_lines_come_top_to_bottom() -> None:
    image = text_image("SECOND", size=(640, 320), at=(20, 200))
    image.paste(text_image("FIRST LINE", size=(600, 120), at=(0, 20)), (20, 20))
    assert [squash(line.text) for line in read_text(image, SETTINGS)] == ["FIRSTLINE", "SECOND"]


def test_boxes_are_on_the_original_image_when_it_is_downscaled() -> None:
    small = text_image("SCALE 7")
    big = small.resize((small.width * 4, small.height * 4), Image.Resampling.BICUBIC)
    (line,) = read_text(big, SETTINGS)
    (reference,) = read_text(small, SETTINGS)
    assert squash(line.text) == "SCALE7"
    assert line.box == pytest.approx([v * 4 for v in reference.box], abs=24)


def test_a_blank_image_has_no_text() -> None:
    assert read_text(Image.new("RGB", (320, 240), "white"), SETTINGS) == []
