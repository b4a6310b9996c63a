r"""Our chat template: ChatML with tool calling, prefix-preserving by design.

The template is Jinja, rendered by ``transformers``' ``apply_chat_template`` (and so by vLLM,
which uses the same code). It is written for this project; the layout follows ChatML as the
Qwen2.5 family uses it, so that a Hermes-style tool-call parser (vLLM's ``hermes``) reads it:

- every message is ``<|im_start|>{role}\n{content}<|im_end|>\n``;
- a ``tools`` list is rendered into the system message, after its content, as one JSON
  object per line inside ``<tools></tools>``;
- an assistant message's OpenAI-style ``tool_calls`` are rendered after its content as
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, one per line (the same shape our
  :func:`~visioncreator.policy.format.write_tool_call` writes);
- consecutive ``tool`` messages form one ``user`` turn, each body inside
  ``<tool_response>\n...\n</tool_response>``;
- the generation prompt is ``<|im_start|>assistant\n``.

Prefix preservation (what multi-turn RL needs, and what TRL checks before it trusts a template):
for every conversation ``m`` and every ``k`` with ``m[k]`` an assistant message,
``render(m[:k], add_generation_prompt=True) + m[k].content + "<|im_end|>"`` is a prefix of
``render(m[:k+1])``, which is a prefix of ``render(m)``. The template guarantees it because
(1) the generation prompt is exactly the opening of an assistant message, (2) no message is
rendered differently for being last or not last (no history-only stripping of thoughts),
(3) content is emitted verbatim (never trimmed), and (4) the system message and the tool block
depend only on ``messages[0]`` and ``tools``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from visioncreator.policy.prompting import node_instruction
from visioncreator.policy.types import Message, Node, ToolSpec

__all__ = [
    "CHAT_TEMPLATE",
    "END_OF_TURN",
    "FORMAT_TAGS",
    "GENERATION_PROMPT",
    "SPECIAL_TOKENS",
    "Divergence",
    "chat_messages",
    "first_divergence",
    "tool_dicts",
]

END_OF_TURN = "<|im_end|>"
"""The token that ends every message; the chat model's stop token."""

GENERATION_PROMPT = "<|im_start|>assistant\n"
"""What ``add_generation_prompt=True`` appends: the opening of an assistant message."""

SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", END_OF_TURN)
"""Special tokens of the tiny models, in id order (0, 1, 2 as in SmolLM2)."""

FORMAT_TAGS: tuple[str, ...] = (
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
    "<tool_response>",
    "</tool_response>",
)
"""Tags that the tiny tokenizers keep as single, non-special tokens (decoded, never skipped).
vLLM's ``hermes`` tool parser needs ``<tool_call>`` and ``</tool_call>`` in the vocabulary."""

# Whitespace control: every tag trims with '-' so that only the explicit '\n' strings reach the
# output. ``content`` may be a string, None, or a list of OpenAI content parts (text kept).
CHAT_TEMPLATE = """\
{%- macro render_content(content) -%}
{%- if content is string -%}{{- content -}}
{%- elif content is iterable and content is not mapping -%}
{%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set has_system = messages | length > 0 and messages[0].role == 'system' -%}
{%- if tools -%}
{{- '<|im_start|>system\\n' -}}
{%- if has_system -%}{{- render_content(messages[0].content) + '\\n\\n' -}}{%- endif -%}
{{- '# Tools\\n\\nThe tools you can call, one JSON signature per line:\\n<tools>\\n' -}}
{%- for tool in tools -%}
{{- (tool.function if tool.function is defined else tool) | tojson -}}{{- '\\n' -}}
{%- endfor -%}
{{- '</tools>\\n\\nCall a tool by writing <tool_call>{"name": <tool name>, "arguments": <JSON object>}</tool_call>.' -}}
{{- '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if loop.first and has_system and tools -%}
{#- already rendered with the tool block -#}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\\n<tool_response>\\n' + render_content(message.content) + '\\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant\\n' + render_content(message.content) -}}
{%- for call in (message.tool_calls or []) -%}
{%- set fn = call.function if call.function is defined else call -%}
{%- if message.content or not loop.first -%}{{- '\\n' -}}{%- endif -%}
{{- '<tool_call>{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- (fn.arguments or {}) | tojson -}}{%- endif -%}
{{- '}</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\\n' + render_content(message.content) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""
"""The chat template (Jinja source), saved into every tiny model's tokenizer."""


def chat_messages(messages: Sequence[Message], node: Node | None, *, instructions: bool = True) -> list[dict[str, Any]]:
    """Our messages as chat-template messages, with the node instructions kept in the history.

    A node's one-line instruction (:func:`~visioncreator.policy.prompting.node_instruction`) goes
    in a ``user`` message of its own right before the assistant turn it asked for: before every
    earlier assistant message that names its node, and at the end for ``node``. Earlier turns are
    therefore rendered exactly as they were prompted, and the rendering stays prefix-preserving
    (an instruction appended to the last user message and dropped afterwards would not be).

    Args:
        messages: The conversation.
        node: The node asking now (``None``: no trailing instruction).
        instructions: Insert the node instructions at all.

    Returns:
        ``{"role", "content"}`` dicts; images are not included (text-only models read the handles
        in the text).

    """
    out: list[dict[str, Any]] = []
    for m in messages:
        if instructions and m.role == "assistant" and m.node is not None:
            out.append({"role": "user", "content": node_instruction(m.node)})
        out.append({"role": m.role, "content": m.content})
    if instructions and node is not None:
        out.append({"role": "user", "content": node_instruction(node)})
    return out


def tool_dicts(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool specs as OpenAI-style function tools, for the template's ``tools`` variable."""
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}
        for t in tools
    ]


class Divergence(NamedTuple):
    """Where a later prompt stops extending an earlier prompt plus its completion."""

    position: int
    """Index of the first token that differs (or the length of the shorter sequence)."""
    expected: tuple[int, ...]
    """Up to 8 tokens of ``earlier`` from ``position``."""
    found: tuple[int, ...]
    """Up to 8 tokens of ``later`` from ``position``."""


def first_divergence(earlier: Sequence[int], later: Sequence[int]) -> Divergence | None:
    """``None`` when ``later`` starts with ``earlier``; else where and how they differ.

    Use it on ``prompt_ids[k] + completion_ids[k]`` against ``prompt_ids[k + 1]``.
    """
    n = min(len(earlier), len(later))
    pos = next((i for i in range(n) if earlier[i] != later[i]), n)
    if pos == len(earlier):
        return None
    return Divergence(pos, tuple(earlier[pos : pos + 8]), tuple(later[pos : pos + 8]))
