"""Checklist scoring of real images with the offline detectors: what they can check, and what they cannot."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from visioncreator.evals.scoring import score_answer, score_with_detectors
from visioncreator.evals.suites import SuiteTask
from visioncreator.tool_servers.schemas import ColorShare, ColorStats, ImageAnalysis, ImageLabel, Region
from visioncreator.tool_servers.synthetic.items import CheckItem


def _sign(text: str) -> Image.Image:
    image = Image.new("RGB", (480, 240), (220, 40, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 50, 440, 190), fill=(250, 250, 250))
    draw.text((70, 70), text, fill=(20, 20, 20), font=ImageFont.load_default(size=96))
    return image


def test_real_detectors_check_text_colour_and_people_on_a_drawn_sign() -> None:
    checklist = [
        CheckItem(check="text", value="SALE"),
        CheckItem(check="text", value="OPEN"),
        CheckItem(check="color", subject="sign", value="red"),
        CheckItem(check="color", subject="sign", value="green"),
        CheckItem(check="absent", subject="person"),
        CheckItem(check="count", subject="person", value=2),
        CheckItem(check="position", subject="sign", relation="above", other="car"),
        CheckItem(check="count", subject="car", value=2),
        CheckItem(check="object", subject="dog", image=1),
    ]
    results = score_with_detectors(checklist, [_sign("SALE")])
    verdicts = [(r.passed, r.checkable) for r in results]
    assert verdicts == [
        (True, True),
        (False, True),
        (True, True),
        (False, True),
        (True, True),
        (False, True),
        (False, False),
        (False, False),
        (False, True),
    ]
    assert "SALE" in results[0].detail
    assert results[2].detail.startswith("dominant colours of the whole image (a proxy for the sign's)")
    assert results[4].detail == "0 people (faces or whole bodies) detected"
    assert results[6].detail == "the detectors do not locate objects"
    assert results[7].detail == "the detectors do not count car (only people and faces)"
    assert results[8].detail == "output image 1 is missing (the answer has 1)"


def test_labels_faces_and_absent_detectors_from_a_given_analysis() -> None:
    seen = ImageAnalysis(
        colors=ColorStats(
            dominant=[ColorShare(name="gray", fraction=0.6)], brightness=0.5, contrast=0.1, saturation=0.0
        ),
        faces=[Region(box=(0, 0, 10, 10)), Region(box=(20, 0, 30, 10))],
        people=[],
        labels=[
            ImageLabel(name="Tibetan terrier", index=200, probability=0.7),
            ImageLabel(name="umbrella", index=879, probability=0.2),
            ImageLabel(name="tabby cat", index=281, probability=0.01),
        ],
        detectors={"colors": "ok", "faces": "ok", "people": "ok", "labels": "ok", "text": "absent"},
    )
    checklist = [
        CheckItem(check="object", subject="dog"),
        CheckItem(check="object", subject="umbrella"),
        CheckItem(check="object", subject="cat"),  # below min_label_probability
        CheckItem(check="absent", subject="cat"),
        CheckItem(check="count", subject="face", value=2),
        CheckItem(check="count", subject="people", value=2),
        CheckItem(check="color", subject="car", value="grey"),
        CheckItem(check="text", value="HELLO"),
        CheckItem(check="style", value="sketch"),
    ]
    results = score_with_detectors(checklist, [Image.new("RGB", (8, 8))], analyses=[seen])
    assert [r.passed for r in results] == [True, True, False, True, True, True, True, False, False]
    assert results[0].detail.startswith("ImageNet label 'Tibetan terrier'")
    assert results[2].detail.startswith("no ImageNet label names it; top: Tibetan terrier (70%)")
    assert results[5].detail == "2 people (faces or whole bodies) detected"
    assert results[7].detail == "the OCR detector did not run (absent)"
    assert not results[8].checkable
    assert [r.checkable for r in results] == [True] * 7 + [False, False]
    blind = ImageAnalysis(detectors={"faces": "absent", "people": "absent", "labels": "error: boom"})
    unseen = score_with_detectors(checklist[:1] + checklist[4:5], [Image.new("RGB", (8, 8))], analyses=[blind])
    assert [r.detail for r in unseen] == [
        "the ImageNet classifier did not run (error: boom)",
        "the face detector did not run (absent)",
    ]
    assert not any(r.passed or r.checkable for r in unseen)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_task_scores_count_checkable_items_only_and_need_one() -> None:
    sign = _png(_sign("SALE"))

    async def read_image(handle: str) -> bytes:
        assert handle == "img_sign"
        return sign

    def task(*checklist: CheckItem) -> SuiteTask:
        return SuiteTask(id="t", split="single", request="a red SALE sign", n_images=1, checklist=checklist)

    unlocatable = CheckItem(check="position", subject="sign", relation="above", other="car")
    styled = CheckItem(check="style", value="sketch")
    mixed = task(CheckItem(check="text", value="SALE"), unlocatable, CheckItem(check="text", value="OPEN"), styled)
    verdict = await score_answer(mixed, ["img_sign"], truths={}, input_scenes=[], read_image=read_image)
    assert verdict.scorer == "detectors"
    assert [(r.passed, r.checkable) for r in verdict.items] == [
        (True, True),
        (False, False),
        (False, True),
        (False, False),
    ]
    assert verdict.checklist_score == 0.5  # 1 of the 2 checkable items; the 2 others are left out
    assert not verdict.success

    passing = await score_answer(
        task(CheckItem(check="text", value="SALE"), unlocatable), ["img_sign"], truths={}, input_scenes=[],
        read_image=read_image,
    )  # fmt: skip
    assert (passing.success, passing.checklist_score) == (True, 1.0)

    nothing = await score_answer(
        task(unlocatable, styled), ["img_sign"], truths={}, input_scenes=[], read_image=read_image
    )
    assert [r.checkable for r in nothing.items] == [False, False]
    assert (nothing.success, nothing.checklist_score) == (False, 0.0)
