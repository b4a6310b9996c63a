"""Every image call runs with a seed the run determines: reproducible runs, common random numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from tests.graph.conftest import make_client
from visioncreator.graph import (
    AgentConfig,
    RunResult,
    TaskRunner,
    ToolClient,
    build_agent,
    call_seed,
    expert_policy,
    run_task,
)
from visioncreator.policy import Policy, ScriptedPolicy, Task

PLAN = '<plan>[{"step": 1, "goal": "a red apple", "tool": "text_to_image", "depends_on": []}]</plan>'
TASK = Task(request="a red apple next to a blue cup", n_images=1, split="single")


def _call(arguments: dict[str, Any]) -> str:
    return f"<tool_call>{json.dumps({'name': 'text_to_image', 'arguments': arguments, 'step': 1})}</tool_call>"


def _scripted(arguments: dict[str, Any]) -> ScriptedPolicy:
    accept = '<reflect>{"verdict": "accept", "faults": []}</reflect>'
    return ScriptedPolicy([PLAN, _call(arguments), accept, '<answer>{"images": []}</answer>'])


async def _run(
    tools: ToolClient, policy: Policy, *, seed: int = 0, base: int | None = None, config: AgentConfig | None = None
) -> RunResult:
    agent = build_agent(policy=policy, tools=tools, config=config, checkpointer=InMemorySaver())
    return await run_task(agent, TASK, seed=seed, call_seed_base=base)


def _image_calls(result: RunResult) -> list[Any]:
    return [c for c in result.trajectory.tool_calls if c.by == "policy" and c.name == "text_to_image"]


async def test_a_call_without_a_seed_gets_one_derived_from_the_run(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        first = await _run(tools, _scripted({"prompt": "a red apple"}), seed=3)
        again = await _run(tools, _scripted({"prompt": "a red apple"}), seed=3)
        other = await _run(tools, _scripted({"prompt": "a red apple"}), seed=4)
    (call,) = _image_calls(first)
    base = first.trajectory.call_seed_base
    assert base is not None
    assert call.arguments["seed"] == call_seed(base, 1, 0)
    assert call.result is not None
    assert call.result["seed"] == call.arguments["seed"]
    # The same run seed gives the same image; another run seed another one.
    assert _image_calls(again)[0].handle == call.handle
    assert _image_calls(other)[0].arguments["seed"] != call.arguments["seed"]


async def test_policy_mode_keeps_the_policys_seed_and_derived_mode_overrides_it(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools:
        kept = await _run(tools, _scripted({"prompt": "a red apple", "seed": 7}), base=11)
        derived = await _run(
            tools, _scripted({"prompt": "a red apple", "seed": 7}), base=11, config=AgentConfig(call_seeds="derived")
        )
    assert _image_calls(kept)[0].arguments["seed"] == 7
    assert _image_calls(derived)[0].arguments["seed"] == call_seed(11, 1, 0)


async def test_runs_sharing_a_base_meet_the_same_first_images_and_redos_draw_new_ones(tmp_path: Path) -> None:
    config = AgentConfig(call_seeds="derived")
    async with make_client(tmp_path / "store", fault_rate=1.0) as tools:
        runner = TaskRunner(policy=expert_policy(), tools=tools, config=config)
        # Two group members (different run seeds: the expert's own seeds differ) share one base.
        a = await runner.run(TASK, seed=0, call_seed_base=99)
        b = await runner.run(TASK, seed=1, call_seed_base=99)
        c = await runner.run(TASK, seed=1, call_seed_base=98)
    firsts = [_image_calls(r)[0] for r in (a, b, c)]
    assert firsts[0].arguments["seed"] == firsts[1].arguments["seed"] == call_seed(99, 1, 0)
    assert firsts[0].handle == firsts[1].handle
    assert a.trajectory.truths[firsts[0].handle] == b.trajectory.truths[firsts[1].handle]
    assert firsts[2].arguments["seed"] == call_seed(98, 1, 0) != firsts[0].arguments["seed"]
    for r in (a, b, c):
        calls = _image_calls(r)
        assert len(calls) > 1  # every image is faulty: the expert redoes
        # Attempt k of step 1 runs with the k-th derived seed: a redo draws a new image.
        assert [x.arguments["seed"] for x in calls] == [
            call_seed(r.trajectory.call_seed_base or 0, 1, k) for k in range(len(calls))
        ]
        assert len({x.handle for x in calls}) == len(calls)
