"""The conversation protocol: how tasks, observations and errors are written as messages.

Graph and policies both use this module, the graph to write messages and scripted or
trained policies to read them, so that what a model sees at inference, in SFT data and in
RL is the same text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visioncreator.policy.types import FormatError, Message, Node, Task, ToolSpec

_TASK_RE = re.compile(r"<task>(.*?)</task>", re.DOTALL)
_OBS_RE = re.compile(r"<observation>(.*?)</observation>", re.DOTALL)

SYSTEM_TEMPLATE = """\
You are VisionCreator, an agent that makes images with tools. Work in explicit turns:
- plan: <think>...</think> then <plan>[{{"step": 1, "goal": "...", "tool": "...", "depends_on": [], \
"prompt": "..."}}, ...]</plan>
- act: one or more <tool_call>{{"name": "...", "arguments": {{...}}, "step": 1}}</tool_call>
- reflect: for every new image, <reflect>{{"verdict": "accept" | "redo" | "revise", "faults": ["..."], \
"image": "img_..."}}</reflect>; after a redo add the corrected <tool_call>; after a revise add the new <plan>
- finish: <answer>{{"images": ["img_...", ...]}}</answer> with the images that fulfil the task, in order.
Name concrete faults: missing object, wrong count or colour, wrong position, wrong text, identity drift.
Budgets: {budgets}.
Tools:
{tools}"""

NODE_INSTRUCTIONS: dict[Node, str] = {
    "plan": "Write your plan now.",
    "act": "Call the tools for the next step(s) of the plan.",
    "reflect": "Reflect on every new image.",
    "finish": "Give your answer now.",
}


class Observation(BaseModel):
    """The outcome of one tool call, as shown to the policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    step: int | None = None
    ok: bool
    result: dict[str, Any] | None = Field(default=None, description="The tool's structured output.")
    error: str | None = None
    inspection: dict[str, Any] | None = Field(
        default=None, description="What inspect_image saw in the new image, for policies that read text."
    )


def system_message(tools: Sequence[ToolSpec], budgets: dict[str, int | float]) -> Message:
    """The system message: the loop, the format, the budgets and the tools."""
    tool_lines = "\n".join(
        f"- {t.name}: {t.description.strip()}\n  arguments schema: {json.dumps(t.input_schema, sort_keys=True)}"
        for t in tools
    )
    budget_text = ", ".join(f"{k}={v}" for k, v in budgets.items()) or "none"
    return Message(role="system", content=SYSTEM_TEMPLATE.format(budgets=budget_text, tools=tool_lines))


def task_message(task: Task) -> Message:
    """The user message that states the task, in words and as JSON."""
    words = f"{task.request}\n(images wanted: {task.n_images}"
    if task.inputs:
        words += f"; input images: {', '.join(task.inputs)}"
    words += ")"
    payload = task.model_dump_json(exclude={"id"})
    return Message(role="user", content=f"{words}\n<task>{payload}</task>", images=task.inputs)


def parse_task(messages: Sequence[Message]) -> Task | None:
    """Recover the task from the first user message that states one."""
    for m in messages:
        if m.role != "user":
            continue
        match = _TASK_RE.search(m.content)
        if match:
            try:
                return Task.model_validate_json(match.group(1))
            except ValidationError:
                return None
    return None


def observation_message(observations: Sequence[Observation]) -> Message:
    """One tool message holding the observations of a batch of tool calls."""
    body = "\n".join(f"<observation>{o.model_dump_json()}</observation>" for o in observations)
    images = tuple(str(o.result["handle"]) for o in observations if o.ok and o.result and "handle" in o.result)
    return Message(role="tool", content=body, images=images)


def parse_observations(message: Message) -> list[Observation]:
    """The observations in a tool message (unparseable ones are skipped)."""
    found: list[Observation] = []
    for match in _OBS_RE.finditer(message.content):
        try:
            found.append(Observation.model_validate_json(match.group(1)))
        except ValidationError:
            continue
    return found


def error_message(node: Node, errors: Sequence[FormatError | str]) -> Message:
    """A user message that shows the policy what was wrong with its last turn."""
    items = [e.model_dump() if isinstance(e, FormatError) else {"code": "invalid", "message": e} for e in errors]
    return Message(role="user", content=f"<error>{json.dumps({'node': node, 'errors': items})}</error>")


def node_instruction(node: Node) -> str:
    """A one-line instruction for the node asking, for back ends that append one."""
    return NODE_INSTRUCTIONS[node]
