from __future__ import annotations

import sys

import pytest
from PIL import Image
from tests.tool_servers.detectors._images import squash, text_image

from visioncreator.tool_servers.backend import SourceImage
from visioncreator.tool_servers.detectors import DETECTORS, UNKNOWN, analyse_image, answer, inspect_real
from visioncreator.tool_servers.detectors import inspect as inspect_module
from visioncreator.tool_servers.schemas import ColorShare, ColorStats, ImageAnalysis, InspectImageInput, Region

HANDLE = "img_" + "c" * 24


def _require_all() -> None:
    for module in ("rapidocr_onnxruntime", "cv2", "torch", "efficientnet_lite_pytorch", "brisque", "skimage"):
        pytest.importorskip(module)


def test_every_detector_runs_on_a_real_photo(astronaut: Image.Image) -> None:
    _require_all()
    analysis = analyse_image(astronaut)
    assert analysis.detectors == dict.fromkeys(DETECTORS, "ok")
    assert set(analysis.detector_s) == set(DETECTORS)
    assert analysis.colors is not None
    assert analysis.colors.dominant
    assert analysis.text == []
    assert analysis.faces is not None
    assert len(analysis.faces) == 1
    assert analysis.people == []
    assert analysis.labels is not None
    assert len(analysis.labels) == 5
    assert analysis.quality is not None
    assert 0.0 <= analysis.quality <= 100.0


@pytest.mark.parametrize(
    ("hidden", "absent"),
    [
        ("rapidocr_onnxruntime", {"text"}),
        ("cv2", {"faces", "people", "quality"}),  # BRISQUE resizes with OpenCV
        ("torch", {"labels"}),
        ("brisque", {"quality"}),
    ],
)
def test_a_hidden_package_is_absent_and_the_others_still_run(
    hidden: str, absent: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_all()
    monkeypatch.setitem(sys.modules, hidden, None)
    analysis = analyse_image(text_image("ABSENT 9"))
    assert {name for name, status in analysis.detectors.items() if status == "absent"} == absent
    assert all(analysis.detectors[name] == "ok" for name in set(DETECTORS) - absent - {"quality"})
    for name in absent:
        assert getattr(analysis, name) is None
    assert analysis.colors is not None
    if "text" not in absent:
        assert analysis.text is not None
        assert [squash(line.text) for line in analysis.text] == ["ABSENT9"]


def test_a_failing_detector_is_an_error_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(image: Image.Image, settings: object) -> list[Region]:
        raise RuntimeError("cascade exploded " + "x" * 500)

    registry = dict(inspect_module._REGISTRY)
    registry["faces"] = ((), broken)
    monkeypatch.setattr(inspect_module, "_REGISTRY", registry)
    analysis = analyse_image(Image.new("RGB", (64, 64), "white"))
    assert analysis.detectors["faces"].startswith("error: RuntimeError: cascade exploded")
    assert len(analysis.detectors["faces"]) < 200
    assert analysis.faces is None
    assert analysis.detectors["colors"] == "ok"


def test_a_flat_image_reports_quality_as_an_error() -> None:
    pytest.importorskip("brisque")
    analysis = analyse_image(Image.new("RGB", (96, 64), (10, 10, 10)))
    assert analysis.detectors["quality"] == "error: QualityUnavailable: image too uniform to score"
    assert analysis.quality is None


def test_inspect_real_reads_text_and_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    image = text_image("OPEN 24 HOURS")
    questions = ["What text is written?", "What colour is it?", "How many dogs?", "Why?"]
    result = inspect_real(InspectImageInput(image=HANDLE, questions=questions), SourceImage(HANDLE, image))
    assert not result.known
    assert (result.handle, result.width, result.height) == (HANDLE, 640, 200)
    assert (result.objects, result.counts, result.style) == ([], {}, "photo")
    assert result.text is not None
    assert squash(result.text) == "OPEN24HOURS"
    assert result.analysis is not None
    assert [a.answer for a in result.answers] == [result.text, "white", UNKNOWN, UNKNOWN]


def test_inspect_real_counts_the_astronaut(astronaut: Image.Image) -> None:
    _require_all()
    questions = ["How many faces?", "how many people are there?", "Is there a person?", "What is in the image?"]
    result = inspect_real(InspectImageInput(image=HANDLE, questions=questions), SourceImage(HANDLE, astronaut))
    answers = [a.answer for a in result.answers]
    assert answers[:3] == ["1", "1", "yes"]
    assert result.analysis is not None
    assert result.analysis.labels is not None
    assert answers[3].startswith(result.analysis.labels[0].name + " (")
    assert result.text is None


def _analysis(**fields: object) -> ImageAnalysis:
    return ImageAnalysis.model_validate(fields)


@pytest.mark.parametrize(
    ("question", "analysis", "expected"),
    [
        ("how many faces?", _analysis(faces=[]), "0"),
        ("how many faces?", _analysis(), UNKNOWN),
        ("How many people?", _analysis(faces=[{"box": (0, 0, 1, 1)}], people=[]), "1"),
        ("How many people?", _analysis(people=[{"box": (0, 0, 1, 1)}] * 2), "2"),
        ("how many cars?", _analysis(faces=[], people=[]), UNKNOWN),
        ("what does the sign say?", _analysis(text=[]), "none"),
        ("what does the sign say?", _analysis(), UNKNOWN),
        ("Are there any people?", _analysis(faces=[], people=[]), "no"),
        ("is the image blurry?", _analysis(quality=71.25), "BRISQUE 71.2 (0 clean, 100 very distorted)"),
        (
            "what is shown?",
            _analysis(labels=[{"name": "tabby cat", "index": 281, "probability": 0.5}]),
            "tabby cat (50%)",
        ),
        ("what is shown?", _analysis(labels=[]), UNKNOWN),
        ("what is the weather?", _analysis(faces=[]), UNKNOWN),
    ],
)
def test_answers(question: str, analysis: ImageAnalysis, expected: str) -> None:
    assert answer(question, analysis) == expected


def test_colour_answer_names_at_most_three() -> None:
    stats = ColorStats(
        dominant=[ColorShare(name=n, fraction=0.2) for n in ("red", "blue", "green", "gold")],
        brightness=0.5,
        contrast=0.2,
        saturation=0.5,
    )
    assert answer("what colours?", ImageAnalysis(colors=stats)) == "red, blue, green"
