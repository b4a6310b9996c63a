"""Layout, drawing, fault injection and scene edits of the synthetic environment."""

from __future__ import annotations

import io
import random

import pytest

from visioncreator.tool_servers.scene import EditOp, FaultType, ObjectSpec, Relation, RelationSpec, Scene, SceneSpec
from visioncreator.tool_servers.synthetic.checklist import checklist_for_edit, checklist_for_spec, verify
from visioncreator.tool_servers.synthetic.edit import apply_edit
from visioncreator.tool_servers.synthetic.faults import ALL_FAULTS, inject
from visioncreator.tool_servers.synthetic.geometry import relation_holds
from visioncreator.tool_servers.synthetic.items import CheckItem
from visioncreator.tool_servers.synthetic.layout import layout, scene_area
from visioncreator.tool_servers.synthetic.render import draw
from visioncreator.tool_servers.synthetic.vocab import PATTERNS, STYLES


def _spec(*objects: tuple[str, int, str | None], relations: tuple[tuple[str, Relation, str], ...] = ()) -> SceneSpec:
    return SceneSpec(
        objects=tuple(ObjectSpec(kind=k, count=n, color=c) for k, n, c in objects),
        relations=tuple(RelationSpec(subject=s, relation=r, object=o) for s, r, o in relations),
    )


def _png(scene: Scene) -> bytes:
    buf = io.BytesIO()
    draw(scene).save(buf, format="PNG")
    return buf.getvalue()


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _assert_well_placed(scene: Scene) -> None:
    area_w, area_h = scene_area(scene)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= area_w
        assert 0 <= y0 < y1 <= area_h
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1 :]:
            assert _overlap(a.box, b.box) == 0, (a, b)


RELATION_SPECS = [
    _spec(("dog", 1, None), ("car", 1, None), relations=(("dog", "left_of", "car"),)),
    _spec(("cat", 2, "red"), ("bench", 1, None), relations=(("cat", "above", "bench"),)),
    _spec(("apple", 3, None), ("bowl", 1, "blue"), relations=(("apple", "next_to", "bowl"),)),
    _spec(("bus", 1, None), ("person", 4, None), relations=(("bus", "right_of", "person"),)),
    _spec(("kite", 1, None), ("boat", 2, None), relations=(("boat", "below", "kite"),)),
    _spec(
        ("dog", 2, None),
        ("car", 1, None),
        ("tree", 1, None),
        relations=(("dog", "left_of", "car"), ("car", "above", "tree"), ("tree", "next_to", "dog")),
    ),
    # A relation kind nobody counted still gets an object to relate to.
    _spec(("clock", 1, None), relations=(("clock", "above", "tv"),)),
    _spec(("cup", 10, None), ("laptop", 1, None), relations=(("laptop", "right_of", "cup"),)),
    _spec(("dog", 2, None), ("cat", 1, None), relations=(("dog", "above", "dog"), ("cat", "left_of", "dog"))),
]


@pytest.mark.parametrize("spec", RELATION_SPECS)
@pytest.mark.parametrize("size", [(256, 256), (512, 128), (128, 384)])
def test_layout_satisfies_every_relation(spec: SceneSpec, size: tuple[int, int]) -> None:
    width, height = size
    for seed in range(15):
        scene = layout(spec, width, height, random.Random(seed))
        _assert_well_placed(scene)
        for rel in spec.relations:
            subjects = [o for o in scene.objects if o.kind == rel.subject]
            others = [o for o in scene.objects if o.kind == rel.object]
            assert any(
                s.id != o.id and relation_holds(s.box, o.box, rel.relation, width, height)
                for s in subjects
                for o in others
            ), (
                seed,
                rel,
                scene,
            )
        assert all(r.passed for r in verify(checklist_for_spec(spec), [scene]))


def test_ten_of_a_kind_and_fifteen_objects_fit_at_256() -> None:
    spec = SceneSpec(
        objects=(ObjectSpec(kind="dog", count=10, color="red"), ObjectSpec(kind="apple", count=5)),
        text="Fifteen",
        relations=(RelationSpec(subject="apple", relation="below", object="dog"),),
    )
    for seed in range(20):
        scene = layout(spec, 256, 256, random.Random(seed))
        assert [o.kind for o in scene.objects].count("dog") == 10
        assert len(scene.objects) == 15
        assert [o.id for o in scene.objects] == list(range(15))
        _assert_well_placed(scene)
        for obj in scene.objects:
            assert obj.box[2] - obj.box[0] >= 20
            assert obj.box[3] - obj.box[1] >= 20


def test_layout_colours_identities_and_background() -> None:
    spec = SceneSpec(objects=(ObjectSpec(kind="car", count=2, color="blue"), ObjectSpec(kind="dog")), style="sketch")
    scene = layout(spec, 256, 256, random.Random(3))
    cars = [o for o in scene.objects if o.kind == "car"]
    assert {o.color for o in cars} == {"blue"}
    for obj in scene.objects:
        kind, color, pattern = obj.identity.split(":")
        assert (kind, color) == (obj.kind, obj.color)
        assert pattern in PATTERNS
    assert scene.background not in {o.color for o in scene.objects}
    assert scene.style == "sketch"
    assert layout(SceneSpec(), 64, 64, random.Random(0)).style == "photo"


def test_layout_copies_reference_identities() -> None:
    ref_scene = layout(_spec(("dog", 1, "gold")), 256, 256, random.Random(1))
    ref = ref_scene.objects[0]
    for seed in range(10):
        scene = layout(_spec(("dog", 2, None), ("cat", 1, None)), 256, 256, random.Random(seed), {"dog": ref})
        dogs = [o for o in scene.objects if o.kind == "dog"]
        assert {o.identity for o in dogs} == {ref.identity}
        # An explicit colour wins over the reference's, the pattern is still copied.
        recoloured = layout(_spec(("dog", 1, "navy")), 256, 256, random.Random(seed), {"dog": ref})
        assert recoloured.objects[0].identity == ref.identity.replace(":gold:", ":navy:")


def test_draw_is_deterministic_and_seed_sensitive() -> None:
    spec = _spec(("dog", 2, "red"), ("car", 1, None), relations=(("dog", "left_of", "car"),))
    spec = spec.model_copy(update={"text": "Hello"})
    first = _png(layout(spec, 256, 256, random.Random(7)))
    assert first == _png(layout(spec, 256, 256, random.Random(7)))
    assert first != _png(layout(spec, 256, 256, random.Random(8)))


def test_styles_change_pixels_and_keep_size() -> None:
    scene = layout(_spec(("dog", 1, "red"), ("pizza", 2, None), ("tv", 1, None)), 200, 120, random.Random(0))
    pictures = {}
    for style in STYLES:
        image = draw(scene.model_copy(update={"style": style}))
        assert image.size == (200, 120)
        assert image.mode == "RGB"
        pictures[style] = image.tobytes()
    assert len(set(pictures.values())) == len(STYLES)


def test_pattern_and_text_are_visible() -> None:
    scene = layout(_spec(("car", 1, "red")), 256, 256, random.Random(0))
    car = scene.objects[0]
    kind, color, _ = car.identity.split(":")
    looks = set()
    for pattern in PATTERNS:
        patterned = car.model_copy(update={"identity": f"{kind}:{color}:{pattern}"})
        looks.add(draw(scene.model_copy(update={"objects": (patterned,)})).tobytes())
    assert len(looks) == len(PATTERNS)
    texts = {draw(scene.model_copy(update={"text": t})).tobytes() for t in ("A", "B")}
    assert len(texts) == 2


FAULT_SPEC = SceneSpec(
    objects=(ObjectSpec(kind="apple", count=3, color="red"), ObjectSpec(kind="car", color="blue")),
    relations=(RelationSpec(subject="apple", relation="left_of", object="car"),),
    text="Hello",
)
_CHECK_OF: dict[FaultType, set[str]] = {
    "dropped_object": {"count", "object"},
    "wrong_color": {"color"},
    "wrong_count": {"count"},
    "swapped_position": {"position"},
    "misspelled_text": {"text"},
    "identity_drift": {"consistency"},
}


@pytest.mark.parametrize("fault", ALL_FAULTS)
def test_each_fault_breaks_its_check(fault: FaultType) -> None:
    for seed in range(25):
        items = checklist_for_spec(FAULT_SPEC)
        refs = [layout(_spec(("car", 1, "blue")), 256, 256, random.Random(seed + 100))]
        scene = layout(FAULT_SPEC, 256, 256, random.Random(seed), {"car": refs[0].objects[0]})
        broken, faults = inject(scene, FAULT_SPEC, random.Random(seed), 1.0, [fault], refs)
        assert [f.type for f in faults] == [fault]
        assert faults[0].detail
        outputs = [broken, refs[0]]
        if fault == "identity_drift":
            items = [*items, CheckItem(check="consistency", subject="car", reference=1)]
        failed = {r.item.check for r in verify(items, outputs) if not r.passed}
        assert failed & _CHECK_OF[fault], (seed, faults, failed)


def test_inapplicable_faults_are_not_injected() -> None:
    spec = _spec(("dog", 1, None))
    scene = layout(spec, 256, 256, random.Random(0))
    for fault in ("wrong_color", "swapped_position", "misspelled_text", "identity_drift"):
        assert inject(scene, spec, random.Random(0), 1.0, [fault]) == (scene, ())
    assert inject(scene, spec, random.Random(0), 0.0, ALL_FAULTS) == (scene, ())


def test_wrong_count_keeps_counts_in_range() -> None:
    for count in (1, 10):
        spec = _spec(("cup", count, None))
        scene = layout(spec, 256, 256, random.Random(count))
        for seed in range(10):
            broken, faults = inject(scene, spec, random.Random(seed), 1.0, ["wrong_count"])
            n = sum(o.kind == "cup" for o in broken.objects)
            assert faults
            assert n == (2 if count == 1 else 9)


def _source() -> Scene:
    spec = _spec(("dog", 1, "red"), ("car", 2, "blue"), ("apple", 2, "green"))
    return layout(spec.model_copy(update={"text": "Hi"}), 256, 256, random.Random(5))


def _untouched(before: Scene, after: Scene, kinds: set[str]) -> None:
    keep = [(o.kind, o.color, o.identity, o.box) for o in before.objects if o.kind not in kinds]
    assert keep == [(o.kind, o.color, o.identity, o.box) for o in after.objects if o.kind not in kinds]


EDITS = [
    (EditOp(op="recolor", kind="car", color="yellow"), {"car"}),
    (EditOp(op="remove", kind="apple"), {"apple"}),
    (EditOp(op="add", kind="cat", count=2, relation="left_of", other="dog"), {"cat"}),
    (EditOp(op="add", kind="dog", color="red"), {"dog"}),
    (EditOp(op="move", kind="dog", relation="right_of", other="car"), {"dog"}),
    (EditOp(op="move", kind="apple", relation="above", other="dog"), {"apple"}),
    (EditOp(op="restyle", style="pixel_art"), set()),
    (EditOp(op="text", text="Bye"), set()),
]


@pytest.mark.parametrize(("op", "named"), EDITS)
def test_edit_ops(op: EditOp, named: set[str]) -> None:
    source = _source()
    for seed in range(10):
        edited = apply_edit(source, [op], random.Random(seed))
        _untouched(source, edited, named)
        assert [o.id for o in edited.objects] == list(range(len(edited.objects)))
        results = verify(checklist_for_edit([op], source_scene=source), [edited], [source])
        assert all(r.passed for r in results), results
    if op.op == "recolor":
        assert all(o.identity.startswith("car:yellow:") for o in edited.objects if o.kind == "car")
    if op.op == "move":
        anchor = next(o for o in edited.objects if o.kind == op.other)
        for obj in edited.objects:
            if obj.kind == op.kind:
                assert op.relation is not None
                assert relation_holds(obj.box, anchor.box, op.relation, edited.width, edited.height)


def test_move_moves_only_what_must_move() -> None:
    spec = _spec(("dog", 1, "red"), ("car", 1, "blue"), ("cup", 3, None), relations=(("dog", "left_of", "car"),))
    for seed in range(10):
        source = layout(spec, 256, 256, random.Random(seed))
        edited = apply_edit(source, [EditOp(op="move", kind="dog", relation="right_of", other="car")], random.Random(0))
        dog, car = edited.objects[0], edited.objects[1]
        assert dog.box != source.objects[0].box
        assert relation_holds(dog.box, car.box, "right_of", 256, 256)
        _untouched(source, edited, {"dog"})
        car_at_right_edge = 256 - car.box[2] < (car.box[2] - car.box[0]) // 2
        if car_at_right_edge:
            # Nothing is right of a car at the edge (the horizontal offset must dominate) without
            # overlapping it: the dog may stand in front of the car, but inside the image.
            _assert_well_placed(edited.model_copy(update={"objects": edited.objects[1:]}))
            assert 0 <= dog.box[0] < dog.box[2] <= 256
        else:
            _assert_well_placed(edited)


def test_edit_on_empty_scene_places_objects_inside() -> None:
    empty = Scene(width=300, height=200, background="unknown")
    edited = apply_edit(
        empty,
        [
            EditOp(op="add", kind="dog", count=3, color="red"),
            EditOp(op="add", kind="car", relation="below", other="dog"),
        ],
        random.Random(0),
    )
    assert [o.kind for o in edited.objects] == ["dog", "dog", "dog", "car"]
    _assert_well_placed(edited)
