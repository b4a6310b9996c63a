from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visioncreator.policy import (
    Answer,
    FormatError,
    FormatWriteError,
    ParsedTurn,
    Plan,
    PlanStep,
    Reflection,
    ToolCall,
    parse_turn,
    to_tool_call,
    write_answer,
    write_plan,
    write_reflect,
    write_think,
    write_tool_call,
    write_turn,
)

STEP = {"step": 1, "goal": "a red fox", "tool": "text_to_image", "depends_on": [], "prompt": "a red fox"}


def codes(parsed: ParsedTurn) -> list[str]:
    return [e.code for e in parsed.errors]


# --- good turns ---------------------------------------------------------------------------------


def test_think_segment() -> None:
    parsed = parse_turn("<think>  I should draw a fox. </think>")
    assert parsed.ok
    (seg,) = parsed.segments
    assert (seg.kind, seg.body, seg.value, seg.start, seg.end) == ("think", "I should draw a fox.", None, 0, 38)


@pytest.mark.parametrize("body", [json.dumps([STEP]), json.dumps({"steps": [STEP]})])
def test_plan_as_list_or_object(body: str) -> None:
    parsed = parse_turn(f"<plan>{body}</plan>")
    assert parsed.ok
    assert parsed.plan == Plan(steps=(PlanStep(step=1, goal="a red fox", tool="text_to_image", prompt="a red fox"),))


def test_tool_call_reflect_answer() -> None:
    text = (
        '<tool_call>{"name": "text_to_image", "arguments": {"prompt": "fox"}, "step": 2}</tool_call>\n'
        '<reflect>{"verdict": "redo", "faults": ["missing object: fox"], "image": "img_1"}</reflect>\n'
        '<answer>{"images": ["img_1", "img_2"]}</answer>'
    )
    parsed = parse_turn(text)
    assert parsed.ok
    assert [s.kind for s in parsed.segments] == ["tool_call", "reflect", "answer"]
    assert parsed.tool_calls == (ToolCall(name="text_to_image", arguments={"prompt": "fox"}, step=2),)
    assert parsed.reflections == (Reflection(verdict="redo", faults=("missing object: fox",), image="img_1"),)
    assert parsed.answer == Answer(images=("img_1", "img_2"))
    for seg in parsed.segments:
        assert text[seg.start : seg.end].startswith(f"<{seg.kind}>")
        assert text[seg.start : seg.end].endswith(f"</{seg.kind}>")


def test_several_calls_keep_order_and_unknown_tags_inside_think_are_text() -> None:
    text = "<think>use <b>two</b> calls</think>" + "".join(
        f'<tool_call>{{"name": "t{i}", "arguments": {{}}}}</tool_call>' for i in range(3)
    )
    parsed = parse_turn(text)
    assert parsed.ok
    assert parsed.segments[0].body == "use <b>two</b> calls"
    assert [c.name for c in parsed.tool_calls] == ["t0", "t1", "t2"]


def test_native_tool_call_maps_to_the_same_tool_call() -> None:
    native = {
        "id": "call_7",
        "type": "function",
        "function": {"name": "text_to_image", "arguments": '{"prompt": "fox", "seed": 3, "step": 1}'},
    }
    tagged = parse_turn(
        '<tool_call>{"name": "text_to_image", "arguments": {"prompt": "fox", "seed": 3}, "step": 1}</tool_call>'
    ).tool_calls[0]
    assert to_tool_call(native) == tagged.model_copy(update={"id": "call_7"})
    assert to_tool_call({"function": {"name": "x", "arguments": {"a": 1}}}) == ToolCall(name="x", arguments={"a": 1})


@pytest.mark.parametrize(
    ("native", "code"),
    [
        ({"function": {"name": "x", "arguments": "{nope"}}, "bad_json"),
        ({"function": {"name": "x", "arguments": "[1]"}}, "bad_schema"),
        ({"function": {"name": "", "arguments": "{}"}}, "bad_schema"),
        ({"function": "text"}, "bad_schema"),
        ({}, "bad_schema"),
    ],
)
def test_bad_native_tool_calls_become_errors(native: dict[str, Any], code: str) -> None:
    result = to_tool_call(native)
    assert isinstance(result, FormatError)
    assert result.code == code


# --- junk ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["empty"]),
        ("  \n\t", ["empty"]),
        ("just words", ["stray_text"]),
        ("<think>unfinished", ["unclosed_tag"]),
        ("<tool_c", ["stray_text"]),
        ("</plan>", ["stray_close"]),
        ("<foo>bar</foo>", ["unknown_tag"]),
        ("<foo>", ["unknown_tag"]),
        ("<plan>[{]</plan>", ["bad_json"]),
        ('<plan>[{"goal": "x"}]</plan>', ["bad_schema"]),
        ("<plan>[]</plan>", ["bad_schema"]),
        ('<plan>"x"</plan>', ["bad_schema"]),
        ('<tool_call>["x"]</tool_call>', ["bad_schema"]),
        ('<reflect>{"verdict": "maybe"}</reflect>', ["bad_schema"]),
        ('<answer>{"images": 3}</answer>', ["bad_schema"]),
        ("<plan><tool_call>{}</tool_call></plan>", ["nested_tag"]),
        ("<think>a<think>b</think>", ["nested_tag"]),
        ("<answer>" + "[" * 100_000 + "</answer>", ["bad_json"]),
        ('<tool_call>{"name": "x", "arguments": {"n": ' + "9" * 5000 + "}}</tool_call>", ["bad_json"]),
    ],
)
def test_junk_becomes_typed_errors(text: str, expected: list[str]) -> None:
    parsed = parse_turn(text)
    assert codes(parsed) == expected
    assert parsed.segments == ()


def test_good_segments_around_bad_ones_survive() -> None:
    text = (
        "hello <think>ok</think> junk <tool_call>{bad</tool_call>\n"
        '<plan><tool_call>{"name": "x"}</tool_call></plan> <answer>{"images": ["img_a"]}</answer> tail'
    )
    parsed = parse_turn(text)
    assert codes(parsed) == ["stray_text", "stray_text", "bad_json", "nested_tag", "stray_text"]
    assert [s.kind for s in parsed.segments] == ["think", "answer"]
    assert parsed.answer == Answer(images=("img_a",))
    stray = parsed.errors[0]
    assert text[stray.start : stray.end] == "hello"


def test_truncated_segment_does_not_swallow_the_next() -> None:
    parsed = parse_turn('<think>cut off here <answer>{"images": ["img_b"]}</answer>')
    assert codes(parsed) == ["unclosed_tag"]
    assert parsed.answer == Answer(images=("img_b",))


def test_one_error_per_run_of_stray_text() -> None:
    parsed = parse_turn("one two\nthree <think>x</think>   \n  four")
    assert codes(parsed) == ["stray_text", "stray_text"]


# --- writers ------------------------------------------------------------------------------------


def test_writers_make_compact_deterministic_text() -> None:
    call = ToolCall(name="text_to_image", arguments={"seed": 1, "prompt": "a fox"}, step=1)
    assert write_tool_call(call) == (
        '<tool_call>{"name":"text_to_image","arguments":{"prompt":"a fox","seed":1},"step":1}</tool_call>'
    )
    turn = write_turn(write_think("go"), write_answer(Answer(images=("img_a",))))
    assert turn == '<think>go</think>\n<answer>{"images":["img_a"]}</answer>'


def test_writer_escapes_tags_inside_json_strings() -> None:
    step = PlanStep(step=1, goal="a sign that says </plan>", tool="text_to_image", prompt="<think>")
    text = write_plan([step])
    assert "</plan>" not in text[: -len("</plan>")]
    assert parse_turn(text).plan == Plan(steps=(step,))


def test_write_think_refuses_format_tags() -> None:
    with pytest.raises(FormatWriteError):
        write_think("I will <answer> now")


# --- properties ---------------------------------------------------------------------------------

_TAG_SOUP = st.lists(
    st.sampled_from(
        [
            "<think>",
            "</think>",
            "<plan>",
            "</plan>",
            "<tool_call>",
            "</tool_call>",
            "<reflect>",
            "</reflect>",
            "<answer>",
            "</answer>",
            "<foo>",
            "</foo>",
            "<",
            ">",
            "/",
            "{",
            "}",
            "[",
            "]",
            '"',
            ":",
            ",",
            " ",
            "\n",
            "x",
            "1",
            '{"name": "a", "arguments": {}}',
            '{"images": []}',
            '{"verdict": "accept"}',
            json.dumps([STEP]),
        ]
    )
    | st.text(max_size=8),
    max_size=40,
).map("".join)


def _check_spans(text: str, parsed: ParsedTurn) -> None:
    spans = sorted([(s.start, s.end) for s in parsed.segments] + [(e.start, e.end) for e in parsed.errors])
    previous_end = 0
    for start, end in spans:
        assert 0 <= start <= end <= len(text)
        assert start >= previous_end
        previous_end = end
    for seg in parsed.segments:
        assert text[seg.start : seg.end].startswith(f"<{seg.kind}>")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), _TAG_SOUP))
def test_parse_turn_never_raises_and_spans_are_ordered(text: str) -> None:
    parsed = parse_turn(text)
    _check_spans(text, parsed)
    assert parsed.ok == (not parsed.errors)
    if not text.strip():
        assert codes(parsed) == ["empty"]


_JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_STEPS = st.builds(
    PlanStep,
    step=st.integers(1, 20),
    goal=st.text(),
    tool=st.sampled_from(["text_to_image", "edit_image", "reference_to_image"]),
    depends_on=st.lists(st.integers(1, 20), max_size=3).map(tuple),
    prompt=st.none() | st.text(),
)
_SEGMENT = st.one_of(
    st.lists(_STEPS, min_size=1, max_size=4).map(lambda s: Plan(steps=tuple(s))),
    st.builds(
        ToolCall,
        name=st.text(min_size=1),
        arguments=st.dictionaries(st.text(max_size=8), _JSON, max_size=4),
        step=st.none() | st.integers(1, 20),
        id=st.just("") | st.text(max_size=5),
    ),
    st.builds(
        Reflection,
        verdict=st.sampled_from(["accept", "redo", "revise"]),
        faults=st.lists(st.text(), max_size=3).map(tuple),
        image=st.none() | st.text(),
    ),
    st.builds(Answer, images=st.lists(st.text(), max_size=4).map(tuple)),
    st.text().filter(lambda t: "<" not in t),
)


def _write(value: Plan | ToolCall | Reflection | Answer | str) -> str:
    if isinstance(value, Plan):
        return write_plan(value)
    if isinstance(value, ToolCall):
        return write_tool_call(value)
    if isinstance(value, Reflection):
        return write_reflect(value)
    if isinstance(value, Answer):
        return write_answer(value)
    return write_think(value)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_SEGMENT, min_size=1, max_size=5))
def test_writers_round_trip(values: list[Plan | ToolCall | Reflection | Answer | str]) -> None:
    text = write_turn(*(_write(v) for v in values))
    parsed = parse_turn(text)
    assert parsed.ok, parsed.errors
    got = [s.body if s.kind == "think" else s.value for s in parsed.segments]
    assert got == [v.strip() if isinstance(v, str) else v for v in values]
    _check_spans(text, parsed)
