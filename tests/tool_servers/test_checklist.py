"""Checklists of the synthetic environment: building, exact verification, and the critique oracle."""

from __future__ import annotations

from typing import Any

import pytest

from visioncreator.tool_servers.scene import EditOp, ObjectSpec, RelationSpec, Scene, SceneObject, SceneSpec
from visioncreator.tool_servers.schemas import InspectResult
from visioncreator.tool_servers.synthetic.checklist import (
    checklist_for_edit,
    checklist_for_spec,
    critique,
    scene_from_inspection,
    verify,
)
from visioncreator.tool_servers.synthetic.items import CheckItem
from visioncreator.tool_servers.synthetic.prompt import parse_edit

W = H = 400


def _obj(i: int, kind: str, color: str, x: int, y: int = 200, identity: str | None = None) -> SceneObject:
    return SceneObject(
        id=i, kind=kind, color=color, box=(x - 30, y - 30, x + 30, y + 30), identity=identity or f"{kind}/{color}/plain"
    )


def _scene(*objects: SceneObject, style: str = "photo", text: str | None = None) -> Scene:
    return Scene(width=W, height=H, objects=objects, style=style, text=text)


def _inspect(scene: Scene, *, known: bool = True) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for o in scene.objects:
        counts[o.kind] = counts.get(o.kind, 0) + 1
    return InspectResult(
        handle="img_" + "0" * 24,
        width=scene.width,
        height=scene.height,
        style=scene.style,
        background=scene.background,
        text=scene.text,
        objects=list(scene.objects),
        counts=counts,
        known=known,
    ).model_dump()


APPLES = _scene(_obj(0, "apple", "red", 80), _obj(1, "apple", "red", 150), _obj(2, "bowl", "blue", 300), text="HI")


def test_checklist_for_spec() -> None:
    spec = SceneSpec(
        objects=(
            ObjectSpec(kind="apple", count=2, color="red"),
            ObjectSpec(kind="bowl", color="blue"),
            ObjectSpec(kind="dog", color="brown"),
            ObjectSpec(kind="dog", color="black"),
        ),
        relations=(RelationSpec(subject="apple", relation="left_of", object="bowl"),),
        text="HI",
        style="watercolor",
    )
    assert checklist_for_spec(spec, image=1) == [
        CheckItem(check="count", image=1, subject="apple", value=2),
        CheckItem(check="count", image=1, subject="bowl", value=1),
        CheckItem(check="count", image=1, subject="dog", value=2),
        CheckItem(check="color", image=1, subject="apple", value="red"),
        CheckItem(check="color", image=1, subject="bowl", value="blue"),
        CheckItem(check="position", image=1, subject="apple", relation="left_of", other="bowl"),
        CheckItem(check="text", image=1, value="HI"),
        CheckItem(check="style", image=1, value="watercolor"),
    ]
    assert checklist_for_spec(SceneSpec()) == []


def test_checklist_for_edit() -> None:
    source = _scene(_obj(0, "apple", "green", 80), _obj(1, "bowl", "blue", 300))
    ops = (
        EditOp(op="add", kind="apple", count=2, color="red", relation="left_of", other="bowl"),
        EditOp(op="add", kind="cat", color="black"),
        EditOp(op="remove", kind="dog"),
        EditOp(op="recolor", kind="car", color="blue"),
        EditOp(op="move", kind="bus", relation="above", other="car"),
        EditOp(op="restyle", style="sketch"),
        EditOp(op="text", text="SALE"),
    )
    assert checklist_for_edit(ops, image=0, source=1, source_scene=source) == [
        CheckItem(check="count", subject="apple", value=3),
        CheckItem(check="position", subject="apple", relation="left_of", other="bowl"),
        CheckItem(check="count", subject="cat", value=1),
        CheckItem(check="color", subject="cat", value="black"),
        CheckItem(check="absent", subject="dog"),
        CheckItem(check="color", subject="car", value="blue"),
        CheckItem(check="position", subject="bus", relation="above", other="car"),
        CheckItem(check="style", value="sketch"),
        CheckItem(check="text", value="SALE"),
        CheckItem(check="preserved", reference=1),
    ]
    twice = checklist_for_edit(parse_edit("add a cat and two cats"), source_scene=source)
    assert [i.value for i in twice if i.check == "count"] == [1, 3]
    without_source = checklist_for_edit(ops[:1])
    assert without_source[:2] == [
        CheckItem(check="object", subject="apple"),
        CheckItem(check="color", subject="apple", value="red"),
    ]


CASES: list[tuple[CheckItem, bool, str]] = [
    (CheckItem(check="object", subject="apple"), True, "2 apples found"),
    (CheckItem(check="object", subject="dog"), False, "no dog found"),
    (CheckItem(check="count", subject="apple", value=2), True, "2 apples, expected 2"),
    (CheckItem(check="count", subject="apple", value=3), False, "2 apples, expected 3"),
    (CheckItem(check="count", subject="bowl", value=2), False, "1 bowl, expected 2"),
    (CheckItem(check="color", subject="apple", value="red"), True, "every apple is red"),
    (CheckItem(check="color", subject="bowl", value="red"), False, "1 of 1 bowl not red: blue"),
    (CheckItem(check="color", subject="dog", value="red"), False, "no dog found"),
    (
        CheckItem(check="position", subject="apple", relation="left_of", other="bowl"),
        True,
        "apple left of bowl: objects 0 and 2",
    ),
    (CheckItem(check="position", subject="apple", relation="right_of", other="bowl"), False, "no apple right of bowl"),
    (
        CheckItem(check="position", subject="apple", relation="right_of", other="apple"),
        True,
        "apple right of apple: objects 1 and 0",
    ),
    (CheckItem(check="position", subject="bowl", relation="right_of", other="bowl"), False, "no bowl right of bowl"),
    (CheckItem(check="position", subject="dog", relation="above", other="bowl"), False, "no dog found"),
    (CheckItem(check="text", value="HI"), True, "text is 'HI'"),
    (CheckItem(check="text", value="HELLO"), False, "text is 'HI', expected 'HELLO'"),
    (CheckItem(check="style", value="photo"), True, "style is photo"),
    (CheckItem(check="style", value="sketch"), False, "style is photo, expected sketch"),
    (CheckItem(check="absent", subject="dog"), True, "no dog found"),
    (CheckItem(check="absent", subject="apple"), False, "2 apples found, expected none"),
    (CheckItem(check="object", image=3, subject="apple"), False, "no output image 3 (2 given)"),
    (CheckItem(check="consistency", image=0, subject="bowl", reference=1), True, "bowl matches image 1"),
    (CheckItem(check="consistency", image=1, subject="bowl", reference=0), True, "bowl matches image 0"),
    (
        CheckItem(check="consistency", image=0, subject="apple", reference=1),
        False,
        "apple looks like apple/red/plain, image 1 has apple/red/dotted",
    ),
    (CheckItem(check="consistency", image=0, subject="dog", reference=1), False, "no dog found"),
    (CheckItem(check="consistency", image=1, subject="dog", reference=0), False, "no dog in reference image 0"),
    (
        CheckItem(check="consistency", image=0, subject="bowl", reference=5),
        False,
        "no reference output image 5 (2 given)",
    ),
    (CheckItem(check="preserved", reference=3), False, "no input image 3 (1 given)"),
]


@pytest.mark.parametrize(("item", "passed", "detail"), CASES, ids=[d for _, _, d in CASES])
def test_verify_each_kind(item: CheckItem, passed: bool, detail: str) -> None:
    other = _scene(
        _obj(0, "apple", "red", 80, identity="apple/red/dotted"),
        _obj(1, "dog", "brown", 150),
        _obj(2, "bowl", "blue", 300),
    )
    (result,) = verify([item], [APPLES, other], [APPLES])
    assert (result.passed, result.detail) == (passed, detail)
    assert result.item == item


def test_preserved_exempts_edited_subjects_only() -> None:
    source = _scene(_obj(0, "dog", "brown", 80), _obj(1, "car", "red", 300), _obj(2, "bench", "green", 200, 300))
    recoloured = _scene(_obj(0, "dog", "brown", 80), _obj(1, "car", "blue", 300), _obj(2, "bench", "green", 200, 300))
    items = checklist_for_edit((EditOp(op="recolor", kind="car", color="blue"),), source_scene=source)
    assert all(r.passed for r in verify(items, [recoloured], [source]))
    # The bench changed colour too: not preserved.
    broken = _scene(_obj(0, "dog", "brown", 80), _obj(1, "car", "blue", 300), _obj(2, "bench", "red", 200, 300))
    preserved = verify(items, [broken], [source])[-1]
    assert (preserved.passed, preserved.detail) == (False, "lost 1 green bench")
    # A relation's `other` is a landmark, not an edited kind: losing the bench is a fault.
    moved = [
        CheckItem(check="position", subject="dog", relation="left_of", other="bench"),
        CheckItem(check="preserved"),
    ]
    assert not verify(moved, [_scene(_obj(0, "dog", "brown", 80))], [source])[-1].passed


def test_scene_from_inspection_round_trips() -> None:
    assert scene_from_inspection(_inspect(APPLES)) == APPLES


def test_critique_good_images_have_no_faults() -> None:
    prompt = 'two red apples to the left of a blue bowl, with the text "HI"'
    assert critique(goal=prompt, tool="text_to_image", inspection=_inspect(APPLES)) == []
    assert (
        critique(goal=prompt, tool="reference_to_image", inspection=_inspect(APPLES), references=[_inspect(APPLES)])
        == []
    )
    assert critique(goal="a dog", tool="text_to_image", inspection=_inspect(_scene(), known=False)) == []


PROMPT_FAULTS: list[tuple[str, Scene, list[str]]] = [
    ("a dog and two red apples", APPLES, ["missing object: dog"]),
    ("three red apples", APPLES, ["wrong count: apple 2, expected 3"]),
    ("a red bowl", APPLES, ["wrong colour: bowl is blue, expected red"]),
    ("two apples to the right of a bowl", APPLES, ["wrong position: apple not right of bowl"]),
    ('two apples with the text "HELLO"', APPLES, ["wrong text: 'HI', expected 'HELLO'"]),
    ('a poster with the text "HELLO"', _scene(), ["wrong text: none, expected 'HELLO'"]),
    (
        "two apples in watercolor style",
        _scene(_obj(0, "apple", "red", 80), _obj(1, "apple", "red", 150), style="sketch"),
        ["wrong style: sketch, expected watercolor"],
    ),
    ("a dog next to a cat", _scene(), ["missing object: dog", "missing object: cat"]),
]


@pytest.mark.parametrize(("prompt", "scene", "faults"), PROMPT_FAULTS, ids=[f[0] for _, _, f in PROMPT_FAULTS])
def test_critique_prompt_faults(prompt: str, scene: Scene, faults: list[str]) -> None:
    assert critique(goal=prompt, tool="text_to_image", inspection=_inspect(scene)) == faults


def test_critique_identity_drift() -> None:
    reference = _scene(_obj(0, "dog", "brown", 100, identity="dog/brown/striped"), _obj(1, "cat", "black", 300))
    new = _scene(_obj(0, "dog", "brown", 200, identity="dog/brown/plain"), _obj(1, "bench", "green", 300))
    got = critique(
        goal="a brown dog next to a bench",
        tool="reference_to_image",
        inspection=_inspect(new),
        references=[_inspect(reference)],
    )
    assert got == ["identity drift: dog differs from the reference"]
    unknown = _inspect(reference, known=False)
    assert critique(goal="a brown dog", tool="reference_to_image", inspection=_inspect(new), references=[unknown]) == []


def test_critique_keeps_only_the_subjects_identity_like_the_checklist() -> None:
    # Regression (built-in multi-006): "three images of the same blue bus"; the panels ask for a red
    # cup, then a white cup. Only the bus must keep its identity (the task's consistency items).
    first = _scene(_obj(0, "bus", "blue", 100, identity="bus/blue/striped"), _obj(1, "cup", "red", 300))
    reference = [_inspect(first)]
    clean = _scene(_obj(0, "bus", "blue", 100, 100, "bus/blue/striped"), _obj(1, "cup", "white", 100, 300))
    goal = "a blue bus above a white cup"
    assert critique(goal=goal, tool="reference_to_image", inspection=_inspect(clean), references=reference) == []
    other_cup = _scene(_obj(0, "bus", "blue", 100, 100, "bus/blue/striped"), _obj(1, "cup", "red", 100, 300, "c/2"))
    red_cup = "a blue bus above a red cup"
    assert critique(goal=red_cup, tool="reference_to_image", inspection=_inspect(other_cup), references=reference) == []
    drifted = _scene(_obj(0, "bus", "blue", 100, 100, "bus/blue/dotted"), _obj(1, "cup", "white", 100, 300))
    assert critique(goal=goal, tool="reference_to_image", inspection=_inspect(drifted), references=reference) == [
        "identity drift: bus differs from the reference"
    ]
    # The subject is what the goal names first, whatever the tool that made the image.
    assert critique(goal=goal, tool="text_to_image", inspection=_inspect(drifted), references=reference) == [
        "identity drift: bus differs from the reference"
    ]
    # An edit keeps its source (the preserved item), not the identities of references.
    edited = critique(goal="make the cup white", tool="edit_image", inspection=_inspect(drifted), references=reference)
    assert edited == []


SOURCE = _scene(_obj(0, "dog", "brown", 80), _obj(1, "car", "red", 300), _obj(2, "cat", "black", 200, 320))
EDIT_FAULTS: list[tuple[str, Scene, list[str]]] = [
    (
        "make the car blue",
        _scene(_obj(0, "dog", "brown", 80), _obj(1, "car", "blue", 300), _obj(2, "cat", "black", 200, 320)),
        [],
    ),
    ("make the car blue", SOURCE, ["wrong colour: car is red, expected blue"]),
    ("remove the cat", _scene(_obj(0, "dog", "brown", 80), _obj(1, "car", "red", 300)), []),
    ("remove the cat", SOURCE, ["still present: cat"]),
    ("remove the cat", _scene(_obj(1, "car", "red", 300)), ["not preserved: dog"]),
    ("add a dog", SOURCE, ["wrong count: dog 1, expected 2"]),
    ("move the dog to the right of the car", SOURCE, ["wrong position: dog not right of car"]),
    ("make it a sketch", SOURCE, ["wrong style: photo, expected sketch"]),
    ("write 'OPEN'", SOURCE, ["wrong text: none, expected 'OPEN'"]),
]


@pytest.mark.parametrize(("instruction", "scene", "faults"), EDIT_FAULTS)
def test_critique_edit_faults(instruction: str, scene: Scene, faults: list[str]) -> None:
    got = critique(goal=instruction, tool="edit_image", inspection=_inspect(scene), source=_inspect(SOURCE))
    assert got == faults


def test_critique_edit_without_known_source_skips_preservation() -> None:
    lost_everything = _scene(_obj(1, "car", "blue", 300))
    assert critique(goal="make the car blue", tool="edit_image", inspection=_inspect(lost_everything)) == []
    unknown = _inspect(SOURCE, known=False)
    assert (
        critique(goal="make the car blue", tool="edit_image", inspection=_inspect(lost_everything), source=unknown)
        == []
    )
    assert critique(goal="add a cat", tool="edit_image", inspection=_inspect(lost_everything)) == [
        "missing object: cat"
    ]
