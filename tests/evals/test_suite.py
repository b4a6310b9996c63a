"""Suite files: the schema, per-line load errors that name the line, and input images from files."""

from __future__ import annotations

import io
import json
from importlib.resources import files
from pathlib import Path

import pytest
from PIL import Image

from visioncreator.evals.suites import (
    InputImage,
    SuiteError,
    SuiteTask,
    build_synthetic_suite,
    input_scene,
    load_suite,
    load_suite_checked,
    materialize_input,
    write_suite,
)
from visioncreator.tool_servers.scene import GroundTruth, Scene
from visioncreator.tool_servers.store import TRUTH_KEY, ImageStore
from visioncreator.tool_servers.synthetic.items import CheckItem

GOOD = {
    "id": "a",
    "split": "single",
    "request": "a red dog",
    "n_images": 1,
    "checklist": [{"check": "object", "subject": "dog"}],
}


def _png(color: str = "red", size: tuple[int, int] = (64, 48), **info: str) -> bytes:
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    for key, value in info.items():
        meta.add_itxt(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG", pnginfo=meta)
    return buffer.getvalue()


def _write(path: Path, *lines: str | dict[str, object]) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def test_builtin_suite_loads_strictly_and_checked() -> None:
    tasks = load_suite()
    checked = load_suite_checked()
    assert len(tasks) == 60
    assert checked.tasks == tasks
    assert checked.errors == []
    assert {t.split for t in tasks} == {"single", "multi", "img2img"}


async def test_shipped_suite_is_exactly_what_the_builder_makes(tmp_path: Path) -> None:
    shipped = files("visioncreator.evals").joinpath("data", "synthetic.jsonl").read_bytes()
    write_suite(await build_synthetic_suite(), tmp_path / "built.jsonl")
    assert (tmp_path / "built.jsonl").read_bytes() == shipped


async def test_multi_tasks_ask_consistency_of_the_shared_subject_only() -> None:
    for task in await build_synthetic_suite(per_split=6, seed=1):
        if task.split != "multi":
            continue
        subject = task.request.split(":")[0].split()[-1]
        consistency = [i for i in task.checklist if i.check == "consistency"]
        assert [(i.image, i.subject, i.reference) for i in consistency] == [
            (k, subject, 0) for k in range(1, task.n_images)
        ]


def test_bad_lines_become_errors_naming_the_line_and_the_rest_load(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(_png())
    suite = _write(
        tmp_path / "suite.jsonl",
        GOOD,
        '{"id": "broken", "split": "single",',
        GOOD | {"id": "b", "split": "triple"},
        GOOD | {"id": "c", "inputs": [{"path": "photos/missing.png"}], "split": "img2img"},
        "",
        GOOD | {"id": "d", "n_images": 0},
        GOOD | {"id": "a"},
        GOOD | {"id": "e", "split": "img2img", "inputs": [{"path": "photos/cat.png"}]},
        "[1, 2]",
    )
    loaded = load_suite_checked(suite)
    assert [t.id for t in loaded.tasks] == ["a", "e"]
    by_line = {e.line: e for e in loaded.errors}
    assert sorted(by_line) == [2, 3, 4, 6, 7, 9]
    assert by_line[2].message.startswith("line 2: not valid JSON")
    assert by_line[2].id is None
    assert by_line[3].message == "line 3 (task 'b'): unknown split 'triple' (expected one of single, multi, img2img)"
    assert by_line[3].id == "b"
    assert "line 4 (task 'c'): input image 0 'photos/missing.png' not found" in by_line[4].message
    assert by_line[6].message.startswith("line 6 (task 'd'): n_images:")
    assert by_line[7].message == "line 7: duplicate task id 'a' (first on line 1)"
    assert by_line[9].message == "line 9: a task must be a JSON object"
    assert all(e.stage == "load" for e in loaded.errors)
    with pytest.raises(SuiteError, match=r"line 2: not valid JSON.*\(and 5 more bad lines\)") as raised:
        load_suite(suite)
    assert len(raised.value.errors) == 6


def test_schema_rules_for_inputs_and_checklist_indices(tmp_path: Path) -> None:
    suite = _write(
        tmp_path / "s.jsonl",
        GOOD | {"id": "both", "split": "img2img", "inputs": [{"prompt": "a cat", "path": "x.png"}]},
        GOOD | {"id": "abs", "split": "img2img", "inputs": [{"path": str(tmp_path / "x.png")}]},
        GOOD | {"id": "idx", "checklist": [{"check": "object", "subject": "dog", "image": 1}]},
        GOOD | {"id": "pres", "checklist": [{"check": "preserved", "reference": 0}]},
    )
    errors = {e.id: e.message for e in load_suite_checked(suite).errors}
    assert "exactly one of 'prompt' and 'path'" in errors["both"]
    assert "relative to the suite file" in errors["abs"]
    assert "checklist[0] is about output image 1, but n_images is 1" in errors["idx"]
    assert "needs a reference input image below 0" in errors["pres"]


def test_unreadable_suite_file_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"cannot read suite file .*nope.jsonl"):
        load_suite_checked(tmp_path / "nope.jsonl")


def test_non_utf8_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    loaded = load_suite_checked(path)
    assert len(loaded.tasks) == 1
    assert loaded.errors[0].line == 2
    assert "not UTF-8" in loaded.errors[0].message


def test_write_then_load_round_trips_with_paths_and_tags(tmp_path: Path) -> None:
    (tmp_path / "in.png").write_bytes(_png())
    tasks = [
        SuiteTask(
            id="x", split="img2img", request="make it blue", n_images=1, inputs=(InputImage(path="in.png"),),
            checklist=(CheckItem(check="color", subject="car", value="blue"),), tags={"task_type": "color_alter"},
        )
    ]  # fmt: skip
    write_suite(tasks, tmp_path / "s.jsonl")
    assert load_suite(tmp_path / "s.jsonl") == tasks


async def test_materialize_prompt_and_file_inputs(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    rendered = InputImage(prompt="a red dog next to a blue car", seed=3, width=256, height=256)
    handle, scene = await materialize_input(store, rendered, tmp_path)
    assert isinstance(scene, Scene)
    assert scene == await input_scene(rendered)
    assert store.truth(handle) is not None
    assert {o.kind for o in scene.objects} == {"dog", "car"}

    # A user's file that claims a ground truth: decoded safely, stored without it.
    fake = GroundTruth(scene=Scene(width=64, height=48, objects=()), tool="text_to_image", prompt="x")
    (tmp_path / "photo.png").write_bytes(_png("blue", **{TRUTH_KEY: fake.model_dump_json()}))
    handle, scene = await materialize_input(store, InputImage(path="photo.png"), tmp_path)
    assert scene is None
    assert store.truth(handle) is None
    stored, pixels = store.load(handle)
    assert (stored.width, stored.height) == (64, 48)
    assert pixels.getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(SuiteError, match=r"has no synthetic scene"):
        await input_scene(InputImage(path="photo.png"))


async def test_materialize_rejects_missing_and_non_image_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store", max_decoded_pixels=10_000)
    with pytest.raises(SuiteError, match=r"cannot read input image .*gone.png"):
        await materialize_input(store, InputImage(path="gone.png"), tmp_path)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(SuiteError, match=r"notes.png is not usable: not a supported image"):
        await materialize_input(store, InputImage(path="notes.png"), tmp_path)
    (tmp_path / "big.png").write_bytes(_png(size=(200, 100)))
    with pytest.raises(SuiteError, match=r"big.png is not usable: .*max_decoded_pixels"):
        await materialize_input(store, InputImage(path="big.png"), tmp_path)
