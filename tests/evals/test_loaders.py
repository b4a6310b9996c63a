"""GenEval metadata and GEdit-Bench loaders on small files written here, and format detection."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from visioncreator.evals.suites import InputImage, SuiteError, detect_format, load_any_suite, load_gedit, load_geneval
from visioncreator.tool_servers.synthetic.items import CheckItem

GENEVAL = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {
        "tag": "counting",
        "include": [{"class": "dog", "count": 3}],
        "exclude": [{"class": "dog", "count": 4}],
        "prompt": "a photo of three dogs",
    },
    {
        "tag": "position",
        "include": [{"class": "cup", "count": 1}, {"class": "laptop", "count": 1, "position": ["left of", 0]}],
        "prompt": "a photo of a laptop left of a cup",
    },
    {
        "tag": "color_attr",
        "include": [{"class": "car", "count": 1, "color": "red"}, {"class": "bus", "count": 1, "color": "blue"}],
        "prompt": "a photo of a red car and a blue bus",
    },
]


def _lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _png(path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def test_geneval_entries_become_checklists(tmp_path: Path) -> None:
    loaded = load_geneval(_lines(tmp_path / "evaluation_metadata.jsonl", list(GENEVAL)))
    assert loaded.errors == []
    bench, dogs, position, colors = loaded.tasks
    assert [t.id for t in loaded.tasks] == ["geneval-00000", "geneval-00001", "geneval-00002", "geneval-00003"]
    assert bench.split == "single"
    assert bench.n_images == 1
    assert bench.request == "a photo of a bench"
    assert bench.tags == {"tag": "single_object"}
    assert bench.checklist == (CheckItem(check="object", subject="bench"),)
    assert dogs.checklist == (CheckItem(check="count", subject="dog", value=3),)
    assert CheckItem(check="position", subject="laptop", relation="left_of", other="cup") in position.checklist
    assert colors.checklist == (
        CheckItem(check="object", subject="car"),
        CheckItem(check="color", subject="car", value="red"),
        CheckItem(check="object", subject="bus"),
        CheckItem(check="color", subject="bus", value="blue"),
    )


def test_geneval_exclude_one_is_absent_and_bad_lines_name_the_line(tmp_path: Path) -> None:
    rows: list[object] = [
        {"tag": "x", "include": [{"class": "cat"}], "exclude": [{"class": "dog", "count": 1}], "prompt": "a cat"},
        "{not json",
        {
            "tag": "x",
            "include": [{"class": "dog", "count": 2}],
            "exclude": [{"class": "dog", "count": 5}],
            "prompt": "p",
        },
        {"tag": "x", "include": [{"class": "a"}, {"class": "b", "position": ["behind", 0]}], "prompt": "p"},
        {"tag": "x", "include": [], "prompt": "p"},
        {"tag": "x", "include": [{"class": "a", "position": ["left of", 0]}], "prompt": "p"},
    ]
    loaded = load_geneval(_lines(tmp_path / "m.jsonl", rows))
    assert [t.id for t in loaded.tasks] == ["geneval-00000"]
    assert CheckItem(check="absent", subject="dog") in loaded.tasks[0].checklist
    messages = {e.line: e.message for e in loaded.errors}
    assert messages[2].startswith("line 2: not valid JSON")
    assert "line 3: exclude 'dog' with count 5" in messages[3]
    assert messages[4] == "line 4: include[1].position: unknown relation 'behind'"
    assert messages[5].startswith("line 5: include:")
    assert messages[6] == "line 6: include[0].position: 0 is not the index of another include"


def test_gedit_json_array_and_jsonl(tmp_path: Path) -> None:
    _png(tmp_path / "raw" / "k1.png")
    _png(tmp_path / "small" / "k2.png")
    entries: list[object] = [
        {
            "key": "k1", "task_type": "color_alter", "instruction": "make the car red", "instruction_language": "en",
            "input_image": "small/k1.png", "input_image_raw": {"path": "raw/k1.png", "bytes": None},
            "Intersection_exist": True,
        },
        {"key": "k2", "task_type": "style_change", "instruction": "ink style", "instruction_language": "cn",
         "input_image": "small/k2.png"},
        {"key": "k3", "task_type": "subject-add", "instruction": "add a hat", "input_image": "small/missing.png"},
        {"key": "k1", "instruction": "again", "input_image": "raw/k1.png"},
        {"key": "k4", "instruction": "no image"},
        "text",
    ]  # fmt: skip
    (tmp_path / "gedit.json").write_text(json.dumps(entries))
    loaded = load_gedit(tmp_path / "gedit.json")
    first, second = loaded.tasks
    assert first.id == "k1"
    assert first.split == "img2img"
    assert first.request == "make the car red"
    assert first.inputs == (InputImage(path="raw/k1.png"),)
    assert first.checklist == ()
    assert first.tags == {"task_type": "color_alter", "language": "en", "intersection_exist": "true"}
    assert second.inputs == (InputImage(path="small/k2.png"),)
    errors = [e.message for e in loaded.errors]
    assert errors[0] == (f"entry 3: key 'k3': input image 0 'small/missing.png' not found (looked in {tmp_path})")
    assert errors[1] == "entry 4: duplicate key 'k1' (first at entry 1)"
    assert errors[2] == "entry 5: key 'k4': no input_image_raw or input_image path"
    assert errors[3] == "entry 6: not a JSON object"
    assert [t.id for t in load_gedit(tmp_path / "gedit.json", language="en").tasks] == ["k1"]

    _lines(tmp_path / "gedit.jsonl", [entries[1], "{oops"])
    jsonl = load_gedit(tmp_path / "gedit.jsonl")
    assert [t.id for t in jsonl.tasks] == ["k2"]
    assert jsonl.errors[0].line == 2


def test_detect_format_and_load_any(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    ours = _lines(tmp_path / "ours.jsonl", [{"id": "t", "split": "single", "request": "a dog", "n_images": 1}])
    geneval = _lines(tmp_path / "g.jsonl", ["", GENEVAL[0]])
    gedit = _lines(tmp_path / "e.jsonl", [{"key": "k", "instruction": "x", "input_image": "a.png"}])
    assert detect_format(ours) == "visioncreator"
    assert detect_format(geneval) == "geneval"
    assert detect_format(gedit) == "gedit"
    assert [t.id for t in load_any_suite(ours).tasks] == ["t"]
    assert [t.id for t in load_any_suite(geneval).tasks] == ["geneval-00001"]
    assert [t.split for t in load_any_suite(gedit).tasks] == ["img2img"]
    with pytest.raises(SuiteError, match="no JSON object found"):
        detect_format(_lines(tmp_path / "empty.jsonl", ["", "{bad"]))
