"""The agent loop on the offline default, against the real tool server in-process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from tests.graph.conftest import make_client, run
from visioncreator.graph import AgentConfig, Budgets, ToolClient
from visioncreator.policy import Task
from visioncreator.tool_servers.scene import GroundTruth
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.checklist import checklist_for_spec, verify
from visioncreator.tool_servers.synthetic.prompt import parse_prompt


@asynccontextmanager
async def saver(kind: str, tmp_path: Path) -> AsyncIterator[Any]:
    if kind == "memory":
        yield InMemorySaver()
    else:
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "cp.sqlite")) as s:
            yield s


def truth_of(store: Path, handle: str) -> GroundTruth:
    truth = ImageStore(store).truth(handle)
    assert truth is not None
    return truth


@pytest.mark.parametrize("checkpointer", ["memory", "sqlite"])
async def test_single_task_answers_with_a_verified_image(tmp_path: Path, checkpointer: str) -> None:
    async with make_client(tmp_path / "store") as tools:
        await _test_single_task_answers_with_a_verified_image(tools, tmp_path, checkpointer)


async def _test_single_task_answers_with_a_verified_image(tools: ToolClient, tmp_path: Path, checkpointer: str) -> None:
    request = "two red apples to the left of a blue bowl"
    async with saver(checkpointer, tmp_path) as cp:
        with anyio.fail_after(60):
            result = await run(tools, Task(request=request), checkpointer=cp)
    state = result.state
    assert state["termination"] == "answered"
    assert len(state["answer"]) == 1
    nodes = [t.node for t in state["turns"]]
    assert nodes[:3] == ["plan", "act", "reflect"]
    scene = truth_of(tmp_path / "store", state["answer"][0]).scene
    assert all(r.passed for r in verify(checklist_for_spec(parse_prompt(request)), [scene]))


async def test_multi_task_keeps_identity_through_references(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        await _test_multi_task_keeps_identity_through_references(tools, tmp_path)


async def _test_multi_task_keeps_identity_through_references(tools: ToolClient, tmp_path: Path) -> None:
    task = Task(
        request="Three images of the same brown dog: a brown dog next to a red car; "
        'a brown dog below a blue umbrella; a brown dog, with the text "HI"',
        n_images=3,
        split="multi",
    )
    with anyio.fail_after(60):
        result = await run(tools, task)
    answer = result.state["answer"]
    assert len(answer) == 3
    identities = {
        next(o.identity for o in truth_of(tmp_path / "store", h).scene.objects if o.kind == "dog") for h in answer
    }
    assert len(identities) == 1
    names = [c.name for c in result.state["tool_calls"] if c.by == "policy"]
    assert names.count("reference_to_image") == 2
    # Panels 2 and 3 ran in one batch, in parallel.
    batches = {c.batch for c in result.state["tool_calls"] if c.name == "reference_to_image"}
    assert len(batches) == 1


async def test_img2img_edits_the_input(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        await _test_img2img_edits_the_input(tools, tmp_path)


async def _test_img2img_edits_the_input(tools: ToolClient, tmp_path: Path) -> None:
    store = tmp_path / "store"
    made = await tools.call("text_to_image", {"prompt": "a red car next to a green bench", "seed": 3})
    assert made.ok
    assert made.structured
    source = made.structured["handle"]
    task = Task(request="make the car blue", split="img2img", inputs=(source,))
    with anyio.fail_after(60):
        result = await run(tools, task)
    (answer,) = result.state["answer"]
    assert answer != source
    scene = truth_of(store, answer).scene
    assert {o.color for o in scene.objects if o.kind == "car"} == {"blue"}
    assert any(o.kind == "bench" and o.color == "green" for o in scene.objects)
    # The input image was inspected for the policy before it planned.
    first_tool_message = next(m for m in result.state["messages"] if m.role == "tool")
    assert source in first_tool_message.content


async def test_reflection_catches_injected_faults(tmp_path: Path) -> None:
    """With every first attempt faulty-prone, the reflecting agent redoes until the image is right."""
    async with make_client(tmp_path / "store", fault_rate=0.6) as tools:
        outcomes = []
        for seed in range(6):
            with anyio.fail_after(60):
                result = await run(tools, Task(request="three yellow cups next to a purple vase"), seed=seed)
            outcomes.append(result)
    faulty_calls = redo_turns = 0
    for result in outcomes:
        for call in result.state["tool_calls"]:
            if call.by == "policy" and call.ok:
                faulty_calls += bool(truth_of(tmp_path / "store", call.handle).faults)
        redo_turns += sum('"verdict":"redo"' in t.text for t in result.state["turns"])
    assert faulty_calls > 0
    assert redo_turns >= faulty_calls - len(outcomes)  # every fault but a budget-capped last one is redone


async def test_reflection_off_skips_the_reflect_node(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        await _test_reflection_off_skips_the_reflect_node(tools)


async def _test_reflection_off_skips_the_reflect_node(tools: ToolClient) -> None:
    with anyio.fail_after(60):
        result = await run(tools, Task(request="a cat"), config=AgentConfig(reflect=False))
    assert "reflect" not in [t.node for t in result.state["turns"]]
    assert result.state["termination"] == "answered"
    assert not any(c.name == "inspect_image" for c in result.state["tool_calls"])


async def test_same_seed_same_trajectory(tmp_path: Path) -> None:
    async def once(store: Path) -> tuple[list[str], list[str], list[Any]]:
        async with make_client(store, fault_rate=0.3) as tools:
            task = Task(request="Two images of the same white cat: a white cat above a bench; a white cat", n_images=2,
                        split="multi")  # fmt: skip
            result = await run(tools, task, seed=7)
        calls = [(c.name, json.dumps(c.arguments, sort_keys=True), c.handle) for c in result.state["tool_calls"]]
        return result.state["answer"], [t.text for t in result.state["turns"]], calls

    first = await once(tmp_path / "a")
    second = await once(tmp_path / "b")
    assert first == second


async def test_turn_budget_stops_the_loop(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        await _test_turn_budget_stops_the_loop(tools)


async def _test_turn_budget_stops_the_loop(tools: ToolClient) -> None:
    config = AgentConfig(budgets=Budgets(max_turns=2))
    with anyio.fail_after(60):
        result = await run(tools, Task(request="a dog and a cat"), config=config)
    assert result.state["termination"] == "budget_turns"
    assert len(result.state["turns"]) == 2
    assert len(result.state["answer"]) == 1  # the fallback answer: the image made so far


async def test_wall_time_budget_stops_the_loop(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        config = AgentConfig(budgets=Budgets(wall_time_s=0.0))
        with anyio.fail_after(60):
            result = await run(tools, Task(request="a dog"), config=config)
    assert result.state["termination"] == "budget_wall_time"
    assert result.state["turns"] == []
    assert result.state["answer"] == []
