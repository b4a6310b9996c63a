"""Reflection analysis on hand-made trajectories whose right answers are known."""

from __future__ import annotations

from typing import Any

import pytest

from tests.records import trajectory, turn_record
from visioncreator.evals.reflection import (
    classify_reflections,
    reflection_distribution,
    unreflected_images,
)
from visioncreator.evals.results import TaskResult
from visioncreator.graph import TurnRecord
from visioncreator.policy import Reflection, write_reflect, write_think, write_turn
from visioncreator.tool_servers.synthetic import Fault, GroundTruth, Scene

CLEAN, FAULTY, NO_TRUTH = "img_clean", "img_faulty", "img_unknown"


def _truths() -> dict[str, Any]:
    scene = Scene(width=64, height=64)
    dog = Fault(type="wrong_color", subject="dog", detail="dog: red -> blue")
    return {
        CLEAN: GroundTruth(scene=scene, tool="text_to_image").model_dump(mode="json"),
        FAULTY: GroundTruth(scene=scene, tool="text_to_image", faults=(dog,)).model_dump(mode="json"),
    }


def _turn(index: int, *reflections: Reflection) -> TurnRecord:
    text = write_turn(*(write_reflect(r) for r in reflections)) if reflections else write_turn(write_think("hm"))
    return turn_record(index, "reflect", text)


@pytest.mark.parametrize(
    ("reflection", "category"),
    [
        (Reflection(verdict="accept", image=CLEAN), "good"),
        (Reflection(verdict="accept", image=FAULTY), "under"),
        (Reflection(verdict="accept", faults=("wrong colour: dog is blue, expected red",), image=FAULTY), "under"),
        (Reflection(verdict="redo", faults=("wrong colour: dog is blue, expected red",), image=FAULTY), "good"),
        (Reflection(verdict="revise", faults=("missing object: Dog",), image=FAULTY), "good"),
        (Reflection(verdict="redo", faults=("the lighting looks inconsistent",), image=FAULTY), "under"),
        (Reflection(verdict="redo", faults=("the colours look washed out",), image=CLEAN), "over"),
        (Reflection(verdict="revise", faults=("missing object: cat",), image=CLEAN), "over"),
        (Reflection(verdict="accept", image=NO_TRUTH), "unknown"),
        (Reflection(verdict="redo", faults=("blurry",), image=NO_TRUTH), "unknown"),
    ],
)
def test_each_verdict_gets_its_category(reflection: Reflection, category: str) -> None:
    (record,) = classify_reflections(trajectory([_turn(3, reflection)], truths=_truths()))
    assert record.category == category
    assert record.turn == 3
    assert record.image == reflection.image
    assert record.verdict == reflection.verdict
    assert record.faults_listed == list(reflection.faults)
    assert record.faults_true == {CLEAN: [], FAULTY: ["dog: red -> blue"], NO_TRUTH: None}[str(reflection.image)]
    assert record.reason


def test_a_text_fault_is_named_by_mentioning_the_text() -> None:
    scene = Scene(width=64, height=64)
    typo = Fault(type="misspelled_text", detail="text: 'SALE' -> 'SALF'")
    truths = {"img_t": GroundTruth(scene=scene, tool="text_to_image", faults=(typo,)).model_dump(mode="json")}
    named = Reflection(verdict="redo", faults=("wrong text: SALF, expected 'SALE'",), image="img_t")
    vague = Reflection(verdict="redo", faults=("looks odd",), image="img_t")
    records = classify_reflections(trajectory([_turn(0, named, vague)], truths=truths))
    assert [r.category for r in records] == ["good", "under"]


def test_reflections_without_an_image_and_turns_without_reflections_are_not_verdicts() -> None:
    tool_error = Reflection(verdict="redo", faults=("tool error: timed out",))
    turns = [_turn(0), _turn(1, tool_error), _turn(2, Reflection(verdict="accept", image=CLEAN))]
    records = classify_reflections(trajectory(turns, truths=_truths()))
    assert [(r.turn, r.category) for r in records] == [(2, "good")]


def _call(handle: str, *, by: str = "policy", ok: bool = True, name: str = "text_to_image") -> dict[str, Any]:
    return {"id": handle, "batch": 1, "turn": 0, "by": by, "ok": ok, "name": name, "handle": handle if ok else None}


def test_images_nobody_reflected_on_are_counted_apart() -> None:
    calls = [
        _call(CLEAN),
        _call(FAULTY),
        _call("img_other_faulty"),
        _call(CLEAN, by="graph", name="inspect_image"),
        _call("img_failed", ok=False),
    ]
    truths = {**_truths(), "img_other_faulty": _truths()[FAULTY]}
    made = trajectory([_turn(0, Reflection(verdict="accept", image=CLEAN))], calls, truths=truths)
    judged = classify_reflections(made)
    assert unreflected_images(made, judged) == (2, 2)
    assert unreflected_images(made, []) == (3, 2)


def _result(task_id: str, split: str, categories: list[str], unreflected: int = 0) -> TaskResult:
    turns = []
    truths = _truths()
    for k, category in enumerate(categories):
        reflection = {
            "good": Reflection(verdict="accept", image=CLEAN),
            "under": Reflection(verdict="accept", image=FAULTY),
            "over": Reflection(verdict="redo", faults=("smeared",), image=CLEAN),
            "unknown": Reflection(verdict="accept", image=NO_TRUTH),
        }[category]
        turns.append(_turn(k, reflection))
    return TaskResult(
        id=task_id, split=split, request="r", success=True, checklist_score=1.0,
        reflections=classify_reflections(trajectory(turns, truths=truths)), unreflected=unreflected,
        unreflected_faulty=unreflected,
    )  # fmt: skip


def test_distribution_per_split_and_overall() -> None:
    results = [
        _result("a", "single", ["good", "good", "under"]),
        _result("b", "multi", ["over", "unknown"], unreflected=2),
        _result("c", "single", ["over"]),
    ]
    dist = reflection_distribution(results)
    assert list(dist) == ["single", "multi", "all"]
    single, multi, overall = dist["single"], dist["multi"], dist["all"]
    assert (single.good, single.under, single.over, single.unknown) == (2, 1, 1, 0)
    assert (multi.good, multi.under, multi.over, multi.unknown, multi.unreflected) == (0, 0, 1, 1, 2)
    assert (overall.good, overall.under, overall.over, overall.unknown) == (2, 1, 2, 1)
    assert overall.verdicts == 6
    assert overall.unreflected == overall.unreflected_faulty == 2
    assert single.shares() == {"good": 0.5, "under": 0.25, "over": 0.25, "unknown": 0.0}
    assert reflection_distribution([_result("d", "img2img", [], unreflected=1)])["img2img"].shares()["good"] == 0.0
