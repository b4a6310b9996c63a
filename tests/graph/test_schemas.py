"""The compiled agent's input and output schemas, for LangGraph Studio's input form and API clients."""

from __future__ import annotations

from pathlib import Path

import anyio

from tests.graph.conftest import make_client
from visioncreator.graph import build_agent, expert_policy
from visioncreator.policy import Task


async def test_input_and_output_json_schemas_name_the_task(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        agent = build_agent(policy=expert_policy(), tools=tools)
        given = agent.get_input_jsonschema()
        out = agent.get_output_jsonschema()
    assert set(given["properties"]) == {"task", "seed", "call_seed_base"}
    task = given["$defs"]["Task"]
    assert task["required"] == ["request"]
    assert set(task["properties"]) >= {"request", "n_images", "split", "inputs"}
    assert set(out["properties"]) == {"answer", "answer_repaired", "termination", "task"}


async def test_the_task_may_be_given_as_a_model_or_as_its_json(tmp_path: Path) -> None:
    task = Task(request="two green cups next to a red vase")
    async with make_client(tmp_path / "store") as tools:
        agent = build_agent(policy=expert_policy(), tools=tools)
        with anyio.fail_after(60):
            typed = await agent.ainvoke({"task": task, "seed": 1})
            plain = await agent.ainvoke({"task": task.model_dump(mode="json"), "seed": 1})
    assert typed["termination"] == plain["termination"] == "answered"
    assert typed["answer"] == plain["answer"]
    assert typed["task"] == plain["task"] == task
