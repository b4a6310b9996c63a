"""The synthetic environment's prompt and edit parser, and its canonical descriptions."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visioncreator.tool_servers.scene import EditOp, ObjectSpec, RelationSpec, SceneSpec
from visioncreator.tool_servers.synthetic import vocab
from visioncreator.tool_servers.synthetic.prompt import describe_spec, parse_edit, parse_prompt, plural


def _o(kind: str, count: int = 1, color: str | None = None) -> ObjectSpec:
    return ObjectSpec(kind=kind, count=count, color=color)


def _r(subject: str, relation: str, obj: str) -> RelationSpec:
    return RelationSpec.model_validate({"subject": subject, "relation": relation, "object": obj})


PROMPTS: list[tuple[str, SceneSpec]] = [
    ("", SceneSpec()),
    ("a dog", SceneSpec(objects=(_o("dog"),))),
    ("an apple", SceneSpec(objects=(_o("apple"),))),
    ("one cat", SceneSpec(objects=(_o("cat"),))),
    ("two red apples", SceneSpec(objects=(_o("apple", 2, "red"),))),
    ("3 blue cars", SceneSpec(objects=(_o("car", 3, "blue"),))),
    ("ten birds", SceneSpec(objects=(_o("bird", 10),))),
    ("a pair of shoes and a pair of cats", SceneSpec(objects=(_o("cat", 2),))),
    ("dogs", SceneSpec(objects=(_o("dog", 2),))),
    ("a grey horse", SceneSpec(objects=(_o("horse", 1, "gray"),))),
    ("a golden clock and a violet vase", SceneSpec(objects=(_o("clock", 1, "gold"), _o("vase", 1, "purple")))),
    ("three people", SceneSpec(objects=(_o("person", 3),))),
    ("two men and a woman", SceneSpec(objects=(_o("person", 3),))),
    ("four mice", SceneSpec(objects=(_o("mouse", 4),))),
    ("two knives and three forks", SceneSpec(objects=(_o("knife", 2), _o("fork", 3)))),
    ("two sheep", SceneSpec(objects=(_o("sheep", 2),))),
    ("five benches", SceneSpec(objects=(_o("bench", 5),))),
    ("a puppy and a kitten", SceneSpec(objects=(_o("dog"), _o("cat")))),
    (
        "a sofa next to a fridge",
        SceneSpec(objects=(_o("couch"), _o("refrigerator")), relations=(_r("couch", "next_to", "refrigerator"),)),
    ),
    ("a traffic light", SceneSpec(objects=(_o("traffic light"),))),
    ("two teddy bears and a bear", SceneSpec(objects=(_o("teddy bear", 2), _o("bear")))),
    ("a hot dog and a dog", SceneSpec(objects=(_o("hot dog"), _o("dog")))),
    ("a black cell phone", SceneSpec(objects=(_o("cell phone", 1, "black"),))),
    ("two wine glasses", SceneSpec(objects=(_o("wine glass", 2),))),
    ("a fire hydrant", SceneSpec(objects=(_o("fire hydrant"),))),
    ("an orange cat", SceneSpec(objects=(_o("cat", 1, "orange"),))),
    ("two oranges", SceneSpec(objects=(_o("orange", 2),))),
    ("an orange", SceneSpec(objects=(_o("orange"),))),
    ("an orange orange", SceneSpec(objects=(_o("orange", 1, "orange"),))),
    (
        "a red orange next to an orange",
        SceneSpec(objects=(_o("orange", 1, "red"), _o("orange")), relations=(_r("orange", "next_to", "orange"),)),
    ),
    (
        "a dog to the left of a red car",
        SceneSpec(objects=(_o("dog"), _o("car", 1, "red")), relations=(_r("dog", "left_of", "car"),)),
    ),
    (
        "a cat under an umbrella",
        SceneSpec(objects=(_o("cat"), _o("umbrella")), relations=(_r("cat", "below", "umbrella"),)),
    ),
    (
        "a bench next to a fire hydrant",
        SceneSpec(objects=(_o("bench"), _o("fire hydrant")), relations=(_r("bench", "next_to", "fire hydrant"),)),
    ),
    ("a kite above a boat", SceneSpec(objects=(_o("kite"), _o("boat")), relations=(_r("kite", "above", "boat"),))),
    ("a cup on top of a book", SceneSpec(objects=(_o("cup"), _o("book")), relations=(_r("cup", "above", "book"),))),
    (
        "a cow to the right of a big white truck",
        SceneSpec(objects=(_o("cow"), _o("truck", 1, "white")), relations=(_r("cow", "right_of", "truck"),)),
    ),
    ("a cat on the left and a dog", SceneSpec(objects=(_o("cat"), _o("dog")))),
    ('a shop sign with the text "HELLO"', SceneSpec(text="HELLO")),
    ("a poster that says 'Grand Opening'", SceneSpec(text="Grand Opening")),
    ("the cat's toy, 'Bob'", SceneSpec(objects=(_o("cat"),), text="Bob")),
    ("a dog in watercolor style", SceneSpec(objects=(_o("dog"),), style="watercolor")),
    ("a bus as a pixel art image", SceneSpec(objects=(_o("bus"),), style="pixel_art")),
    ("a sketch of a giraffe", SceneSpec(objects=(_o("giraffe"),), style="sketch")),
    ("a zebra in the style of Van Gogh", SceneSpec(objects=(_o("zebra"),), style="oil_painting")),
    ("a photo of a pizza", SceneSpec(objects=(_o("pizza"),), style="photo")),
    ("an 8-bit cake", SceneSpec(objects=(_o("cake"),), style="pixel_art")),
    (
        "a brown dog on a bench. The dog is to the left of a red car",
        SceneSpec(
            objects=(_o("dog", 1, "brown"), _o("bench"), _o("car", 1, "red")),
            relations=(_r("dog", "above", "bench"), _r("dog", "left_of", "car")),
        ),
    ),
    ("a dog and a dog", SceneSpec(objects=(_o("dog", 2),))),
    ("a dog. The brown dog sleeps", SceneSpec(objects=(_o("dog", 1, "brown"),))),
    ("a red apple and a green apple", SceneSpec(objects=(_o("apple", 1, "red"), _o("apple", 1, "green")))),
    ("the dogs", SceneSpec(objects=(_o("dog", 2),))),
    ("a quantum flux capacitor", SceneSpec()),
]


@pytest.mark.parametrize(("prompt", "expected"), PROMPTS, ids=[p for p, _ in PROMPTS])
def test_parse_prompt(prompt: str, expected: SceneSpec) -> None:
    assert parse_prompt(prompt) == expected


@pytest.mark.parametrize("kind", vocab.COCO_CLASSES)
def test_every_class_parses_singular_and_plural(kind: str) -> None:
    assert parse_prompt(f"a {kind}").objects == (_o(kind),)
    assert parse_prompt(f"three {plural(kind)}").objects == (_o(kind, 3),)


def test_irregular_plurals_are_canonical() -> None:
    assert [plural(k) for k in ("person", "knife", "mouse", "skis", "scissors", "bus", "toothbrush")] == [
        "people",
        "knives",
        "mice",
        "skis",
        "scissors",
        "buses",
        "toothbrushes",
    ]


def test_parse_is_deterministic_and_fast() -> None:
    prompt = 'two red apples to the left of a blue bowl, with the text "HI", in watercolor style'
    assert parse_prompt(prompt) == parse_prompt(prompt)
    start = time.perf_counter()
    for _ in range(200):
        parse_prompt(prompt)
    assert (time.perf_counter() - start) / 200 < 1e-3


_WORDS = [
    *vocab.COCO_CLASSES,
    *vocab.COLORS,
    *vocab.COUNT_WORDS,
    *vocab.RELATIONS,
    "the",
    "and",
    ",",
    "'",
    '"',
    "orange",
    "oranges",
    "make",
    "remove",
    "add",
    "move",
    "in watercolor style",
    "11",
    "0",
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(_WORDS), max_size=15).map(" ".join)))
def test_never_raises(text: str) -> None:
    spec = parse_prompt(text)
    assert isinstance(spec, SceneSpec)
    assert all(1 <= o.count <= vocab.MAX_COUNT for o in spec.objects)
    assert isinstance(parse_edit(text), tuple)


EDITS: list[tuple[str, tuple[EditOp, ...]]] = [
    (
        "add two red apples to the left of the bowl",
        (EditOp(op="add", kind="apple", count=2, color="red", relation="left_of", other="bowl"),),
    ),
    ("put a cat on the bench", (EditOp(op="add", kind="cat", count=1, relation="above", other="bench"),)),
    ("add dogs", (EditOp(op="add", kind="dog", count=2),)),
    ("remove the dog", (EditOp(op="remove", kind="dog"),)),
    ("delete the umbrella", (EditOp(op="remove", kind="umbrella"),)),
    ("take away the cup", (EditOp(op="remove", kind="cup"),)),
    ("remove the cat from the bench", (EditOp(op="remove", kind="cat"),)),
    ("make the car blue", (EditOp(op="recolor", kind="car", color="blue"),)),
    ("change the cat's colour to black", (EditOp(op="recolor", kind="cat", color="black"),)),
    ("paint the bus yellow", (EditOp(op="recolor", kind="bus", color="yellow"),)),
    ("turn the red kite green", (EditOp(op="recolor", kind="kite", color="green"),)),
    ("make the cat orange", (EditOp(op="recolor", kind="cat", color="orange"),)),
    ("paint the orange red", (EditOp(op="recolor", kind="orange", color="red"),)),
    (
        "make the car and the bus blue",
        (EditOp(op="recolor", kind="car", color="blue"), EditOp(op="recolor", kind="bus", color="blue")),
    ),
    ("move the dog to the right of the car", (EditOp(op="move", kind="dog", relation="right_of", other="car"),)),
    ("move the dog", ()),
    ("make it a watercolor", (EditOp(op="restyle", style="watercolor"),)),
    ("in pixel art style", (EditOp(op="restyle", style="pixel_art"),)),
    ("turn it into an oil painting", (EditOp(op="restyle", style="oil_painting"),)),
    ("in the style of Van Gogh", (EditOp(op="restyle", style="oil_painting"),)),
    ('write "SALE"', (EditOp(op="text", text="SALE"),)),
    ("change the text to 'OPEN'", (EditOp(op="text", text="OPEN"),)),
    ('add the text "Hi, and bye"', (EditOp(op="text", text="Hi, and bye"),)),
    ("replace the dog with a cat", (EditOp(op="remove", kind="dog"), EditOp(op="add", kind="cat", count=1))),
    (
        "remove the dog and the cat, make the car blue; add a bird above the car",
        (
            EditOp(op="remove", kind="dog"),
            EditOp(op="remove", kind="cat"),
            EditOp(op="recolor", kind="car", color="blue"),
            EditOp(op="add", kind="bird", count=1, relation="above", other="car"),
        ),
    ),
    ("", ()),
    ("do something nice", ()),
]


@pytest.mark.parametrize(("instruction", "expected"), EDITS, ids=[i for i, _ in EDITS])
def test_parse_edit(instruction: str, expected: tuple[EditOp, ...]) -> None:
    assert parse_edit(instruction) == expected


def test_describe_canonical() -> None:
    spec = SceneSpec(
        objects=(_o("apple", 2, "red"), _o("bowl", 1, "blue")),
        relations=(_r("apple", "left_of", "bowl"),),
        text="HI",
        style="watercolor",
    )
    assert describe_spec(spec) == 'two red apples to the left of a blue bowl, with the text "HI", in watercolor style'
    assert describe_spec(SceneSpec()) == ""


@st.composite
def _specs(draw: st.DrawFn) -> SceneSpec:
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(vocab.COCO_CLASSES), st.none() | st.sampled_from(sorted(vocab.COLORS))),
            max_size=5,
            unique=True,
        )
    )
    objects = tuple(_o(k, draw(st.integers(1, vocab.MAX_COUNT)), c) for k, c in keys)
    kinds = list(dict.fromkeys(k for k, _ in keys))
    relations: list[RelationSpec] = []
    if kinds:
        for subject in draw(st.lists(st.sampled_from(kinds), unique=True)):
            relation = draw(st.sampled_from(["left_of", "right_of", "above", "below", "next_to"]))
            relations.append(_r(subject, relation, draw(st.sampled_from(kinds))))
    text = draw(st.none() | st.text(st.characters(exclude_characters="'\ue000\u201c\u201d\u2018\u2019"), max_size=12))
    style = draw(st.none() | st.sampled_from(sorted(vocab.STYLES)))
    return SceneSpec(objects=objects, relations=tuple(relations), text=text, style=style)


@settings(max_examples=300, deadline=None)
@given(_specs())
def test_describe_parse_round_trip(spec: SceneSpec) -> None:
    assert parse_prompt(describe_spec(spec)) == spec
