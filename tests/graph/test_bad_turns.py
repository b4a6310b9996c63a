"""Bad policy output and bad tool calls become observations the policy reads; the graph never crashes."""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.graph import END, START, StateGraph

from tests.graph.conftest import make_client, run
from visioncreator.graph import AgentConfig, Budgets, build_agent
from visioncreator.policy import PolicyRequest, ScriptedPolicy, Task

PLAN = '<plan>[{"step": 1, "goal": "a cat", "tool": "text_to_image", "depends_on": []}]</plan>'


def call(name: str, arguments: dict[str, Any], step: int | None = 1) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments, 'step': step})}</tool_call>"


def last_observations(request: PolicyRequest) -> list[dict[str, Any]]:
    tool_messages = [m for m in request.messages if m.role == "tool"]
    assert tool_messages, "the policy saw no tool message"
    body = tool_messages[-1].content
    return [json.loads(chunk.split("</observation>")[0]) for chunk in body.split("<observation>")[1:]]


BAD_CALLS = {
    "unknown tool": (call("paint_picture", {"prompt": "a cat"}), "unknown tool"),
    "missing argument": (call("text_to_image", {"width": 256}), "prompt"),
    "wrong type": (call("text_to_image", {"prompt": "a cat", "width": "wide"}), "width"),
    "unknown handle": (call("edit_image", {"image": "img_" + "0" * 24, "instruction": "make it red"}), "unknown"),
    "oversize": (call("text_to_image", {"prompt": "a cat", "width": 4096}), "width"),
    "empty prompt": (call("text_to_image", {"prompt": ""}), "prompt"),
    "not an image handle": (call("inspect_image", {"image": "/etc/passwd"}), "image"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
async def test_bad_tool_call_is_an_observation_then_the_task_goes_on(tmp_path: Path, name: str) -> None:
    bad, expected = BAD_CALLS[name]
    policy = ScriptedPolicy(
        [
            PLAN,
            bad,
            '<reflect>{"verdict": "redo", "faults": ["the call failed"]}</reflect>'
            + call("text_to_image", {"prompt": "a cat", "seed": 1}),
            '<reflect>{"verdict": "accept", "faults": [], "image": null}</reflect>',
            lambda r: (
                f'<answer>{{"images": ["{last_observations(r)[0]["result"]["handle"]}"]}}</answer>'
                if r.node == "act"
                else "<answer>{}</answer>"
            ),
        ]
    )
    async with make_client(tmp_path / "store") as tools:
        with anyio.fail_after(60):
            result = await run(tools, Task(request="a cat"), policy=policy)
        # The server still answers a good request afterwards.
        assert (await tools.call("text_to_image", {"prompt": "a dog"})).ok
    errors = [o for r in policy.requests for m in r.messages if m.role in ("tool", "user") for o in [m.content]]
    assert any(expected in e.lower() for e in errors), f"no observation mentions {expected!r}"
    assert result.state["termination"] == "answered"
    assert len(result.state["answer"]) == 1


async def test_junk_turn_becomes_an_error_observation(tmp_path: Path) -> None:
    policy = ScriptedPolicy(
        [
            "<plan>[{not json</plan> and <tool_call> truncated",
            PLAN,
            call("text_to_image", {"prompt": "a cat", "seed": 2}),
            '<reflect>{"verdict": "accept", "faults": []}</reflect>',
            lambda r: f'<answer>{{"images": ["{last_observations(r)[0]["result"]["handle"]}"]}}</answer>',
        ]
    )
    async with make_client(tmp_path / "store") as tools:
        with anyio.fail_after(60):
            result = await run(tools, Task(request="a cat"), policy=policy)
    second = policy.requests[1]
    assert second.node == "plan"
    error = second.messages[-1]
    assert error.role == "user"
    assert "<error>" in error.content
    codes = {e["code"] for e in json.loads(error.content.removeprefix("<error>").removesuffix("</error>"))["errors"]}
    assert "bad_json" in codes
    assert result.state["turns"][0].errors
    assert result.state["termination"] == "answered"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.text(alphabet=st.sampled_from(list('<>/{}[]":, abcplantoolcallreflectanswer_')), max_size=80))
def test_any_junk_never_crashes_the_graph(tmp_path: Path, junk: str) -> None:
    async def go() -> dict[str, Any]:
        policy = ScriptedPolicy([junk])
        config = AgentConfig(budgets=Budgets(max_turns=4), max_format_retries=2)
        async with make_client(tmp_path / "store") as tools:
            with anyio.fail_after(30):
                return (await run(tools, Task(request="a cat"), policy=policy, config=config)).state

    state = anyio.run(go)
    assert state["termination"] in {"format_errors", "budget_turns", "answered", "invalid_answer", "no_answer"}


async def test_redo_budget_refuses_extra_redos(tmp_path: Path) -> None:
    redo = '<reflect>{"verdict": "redo", "faults": ["no"]}</reflect>' + call("text_to_image", {"prompt": "a cat"})
    policy = ScriptedPolicy([PLAN, call("text_to_image", {"prompt": "a cat"}), redo])
    config = AgentConfig(budgets=Budgets(max_redos_per_image=2, max_turns=8))
    async with make_client(tmp_path / "store") as tools:
        with anyio.fail_after(60):
            result = await run(tools, Task(request="a cat"), policy=policy, config=config)
    made = [c for c in result.state["tool_calls"] if c.name == "text_to_image"]
    assert len(made) == 3  # the first call and two redos
    assert any("redo budget of 2" in m.content for m in result.state["messages"] if m.role == "user")


class Parent(TypedDict, total=False):
    task: dict[str, Any]
    answer: list[str]
    termination: str
    log: Annotated[list[str], operator.add]


async def test_agent_embeds_as_a_subgraph(tmp_path: Path) -> None:
    from visioncreator.graph.offline import expert_policy

    async with make_client(tmp_path / "store") as tools:
        agent = build_agent(policy=expert_policy(), tools=tools)
        parent: StateGraph[Parent, None, Parent, Parent] = StateGraph(Parent)
        parent.add_node("before", lambda s: {"log": ["before"]})
        parent.add_node("agent", agent)
        parent.add_node("after", lambda s: {"log": [f"after:{len(s['answer'])}"]})
        parent.add_edge(START, "before")
        parent.add_edge("before", "agent")
        parent.add_edge("agent", "after")
        parent.add_edge("after", END)
        with anyio.fail_after(60):
            out = await parent.compile().ainvoke({"task": Task(request="a red kite").model_dump(mode="json")})
    assert out["termination"] == "answered"
    assert out["log"] == ["before", "after:1"]
