"""Our chat template: layout, tool calling, and the prefix property (rendered by transformers' own renderer)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visioncreator.policy import Message, ToolSpec
from visioncreator.policy.chat_template import (
    CHAT_TEMPLATE,
    END_OF_TURN,
    GENERATION_PROMPT,
    chat_messages,
    first_divergence,
    tool_dicts,
)

pytest.importorskip("transformers")


def render(messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, gen: bool = False) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    result: Any = render_jinja_template(
        conversations=[messages],
        tools=list(tools or []) or None,
        chat_template=CHAT_TEMPLATE,
        add_generation_prompt=gen,
    )
    return str(result[0][0])


TOOLS = tool_dicts([ToolSpec(name="text_to_image", description="Make an image.", input_schema={"type": "object"})])


def test_layout_is_chatml_with_tools_in_the_system_message() -> None:
    messages = [
        {"role": "system", "content": "You are VisionCreator."},
        {"role": "user", "content": "a red fox"},
        {"role": "assistant", "content": "<think>ok</think>"},
        {"role": "tool", "content": "first"},
        {"role": "tool", "content": "second"},
    ]
    text = render(messages, tools=TOOLS, gen=True)
    assert text.startswith("<|im_start|>system\nYou are VisionCreator.\n\n# Tools\n")
    tools_block = re.search(r"<tools>\n(.*)\n</tools>", text, re.DOTALL)
    assert tools_block is not None
    assert json.loads(tools_block.group(1))["name"] == "text_to_image"
    assert text.count("<|im_start|>system") == 1
    assert "<|im_start|>user\na red fox<|im_end|>\n<|im_start|>assistant\n<think>ok</think><|im_end|>\n" in text
    # Consecutive tool messages form one user turn.
    assert (
        "<|im_start|>user\n<tool_response>\nfirst\n</tool_response>\n<tool_response>\nsecond\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    ) in text
    assert text.endswith(GENERATION_PROMPT)


def test_without_tools_the_system_message_is_plain() -> None:
    text = render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"


def test_tools_without_a_system_message_get_their_own() -> None:
    text = render([{"role": "user", "content": "U"}], tools=TOOLS)
    assert text.startswith("<|im_start|>system\n# Tools\n")
    assert text.endswith("<|im_start|>user\nU<|im_end|>\n")


@pytest.mark.parametrize("arguments", [{"prompt": "a fox", "seed": 1}, '{"prompt": "a fox", "seed": 1}'])
def test_native_tool_calls_render_as_tool_call_segments(arguments: Any) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "text_to_image", "arguments": arguments}}
    text = render([{"role": "assistant", "content": "<think>go</think>", "tool_calls": [call, call]}])
    bodies = re.findall(r"<tool_call>(.*?)</tool_call>", text)
    assert len(bodies) == 2
    assert all(json.loads(b) == {"name": "text_to_image", "arguments": {"prompt": "a fox", "seed": 1}} for b in bodies)
    assert text.startswith("<|im_start|>assistant\n<think>go</think>\n<tool_call>")
    assert "</tool_call>\n<tool_call>" in text


def test_content_parts_keep_their_text() -> None:
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:"}}]
    assert render([{"role": "user", "content": parts}]) == "<|im_start|>user\nlook<|im_end|>\n"


def test_chat_messages_keep_node_instructions_in_the_history() -> None:
    messages = [
        Message(role="user", content="task"),
        Message(role="assistant", content="<plan>[]</plan>", node="plan"),
        Message(role="tool", content="obs"),
    ]
    chat = chat_messages(messages, "reflect")
    assert [m["role"] for m in chat] == ["user", "user", "assistant", "tool", "user"]
    assert chat[1]["content"] == "Write your plan now."
    assert chat[-1]["content"] == "Reflect on every new image."
    assert chat_messages(messages, "reflect", instructions=False) == [
        {"role": m.role, "content": m.content} for m in messages
    ]


_PIECES = [*'ab <>/{}":\n\t é', "<tool_call>", "</think>", "<|im_end|>"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)
_ROLES = st.sampled_from(["user", "assistant", "tool", "system"])


@given(
    conversation=st.lists(st.tuples(_ROLES, _TEXT, st.sampled_from(["plan", "act", "reflect", "finish"])), max_size=8),
    with_tools=st.booleans(),
    instructions=st.booleans(),
    first_system=st.booleans(),
)
def test_rendering_is_prefix_preserving(
    conversation: list[tuple[str, str, str]], with_tools: bool, instructions: bool, first_system: bool
) -> None:
    messages = [
        Message.model_validate({"role": role, "content": text, "node": node if role == "assistant" else None})
        for role, text, node in conversation
    ]
    if first_system:
        messages.insert(0, Message(role="system", content="sys"))
    tools = TOOLS if with_tools else None
    full = render(chat_messages(messages, None, instructions=instructions), tools=tools)
    for k, message in enumerate(messages):
        if message.role != "assistant":
            continue
        prompt = render(chat_messages(messages[:k], message.node, instructions=instructions), tools=tools, gen=True)
        upto = render(chat_messages(messages[: k + 1], None, instructions=instructions), tools=tools)
        assert upto.startswith(prompt + message.content + END_OF_TURN)
        assert full.startswith(upto)


def test_first_divergence() -> None:
    assert first_divergence([1, 2], [1, 2, 3]) is None
    assert first_divergence([], [4]) is None
    found = first_divergence([1, 2, 3], [1, 9, 3, 4])
    assert found is not None
    assert (found.position, found.expected[:2], found.found[:2]) == (1, (2, 3), (9, 3))
    shorter = first_divergence([1, 2, 3], [1, 2])
    assert shorter is not None
    assert (shorter.position, shorter.expected, shorter.found) == (2, (3,), ())
