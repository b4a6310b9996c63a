from __future__ import annotations

import pytest
from PIL import Image

from visioncreator.tool_servers.detectors import DetectorSettings
from visioncreator.tool_servers.detectors.faces import find_faces, find_people

pytest.importorskip("cv2")
SETTINGS = DetectorSettings()
# Where the astronaut's face is in skimage's 512 x 512 photo (x0, y0, x1, y1), checked by eye.
FACE = (177, 66, 272, 161)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_finds_the_astronauts_face(astronaut: Image.Image) -> None:
    faces = find_faces(astronaut, SETTINGS)
    assert len(faces) == 1
    assert _overlap(faces[0].box, FACE) > 0.7


def test_face_boxes_are_scaled_back_from_the_downscaled_copy(astronaut: Image.Image) -> None:
    big = astronaut.resize((1536, 1536), Image.Resampling.BICUBIC)  # searched at 640 px
    faces = find_faces(big, SETTINGS)
    assert faces  # largest first; resampling can add a small false positive
    assert _overlap(faces[0].box, tuple(v * 3 for v in FACE)) > 0.6  # type: ignore[arg-type]


def test_no_face_on_a_cat_or_a_flat_image(chelsea: Image.Image) -> None:
    assert find_faces(chelsea, SETTINGS) == []
    assert find_faces(Image.new("RGB", (300, 300), "gray"), SETTINGS) == []


def test_people_detector_runs_and_stays_quiet_without_people(chelsea: Image.Image) -> None:
    assert find_people(chelsea, SETTINGS) == []
    assert find_people(Image.new("RGB", (400, 400), "white"), SETTINGS) == []
    assert find_people(Image.new("RGB", (60, 60), "white"), SETTINGS) == []  # smaller than its window


def test_a_lower_people_threshold_reports_more(astronaut: Image.Image) -> None:
    # At OpenCV's default threshold HOG fires on the astronaut's torso; the default setting drops it.
    loose = find_people(astronaut, DetectorSettings(people_min_score=0.0))
    assert loose
    assert all(p.score is not None for p in loose)
    assert find_people(astronaut, SETTINGS) == []
