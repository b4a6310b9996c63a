"""Human review at reflect, static breakpoints and the running-time budget.

Against the real graph, the real synthetic tool server (in-process) and a real SQLite checkpointer.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from langgraph.types import Command
from PIL import Image
from pydantic import ValidationError

from tests.fakes.policies import CrashAt, SlowPolicy
from tests.graph.conftest import make_client
from visioncreator.graph import (
    Agent,
    AgentConfig,
    Budgets,
    ReviewDecision,
    ReviewError,
    ToolClient,
    TurnRecord,
    build_agent,
    expert_policy,
    open_checkpointer,
    run_task,
    thread_id_for,
)
from visioncreator.graph.review import reviewed_turn
from visioncreator.policy import Message, Plan, Policy, PolicyTurn, Task, parse_turn

DOG = Task(request="a brown dog")
NEW_PLAN = [
    {"step": 1, "goal": "a brown dog on a red chair", "tool": "text_to_image", "prompt": "a brown dog on a red chair"}
]


@asynccontextmanager
async def reviewed(
    tmp_path: Path,
    *,
    policy: Policy | None = None,
    budgets: Budgets | None = None,
    checkpointer: str = "sqlite",
    **compile_args: Any,
) -> AsyncIterator[tuple[Agent, ToolClient]]:
    config = AgentConfig(review=True, budgets=budgets or Budgets())
    where = tmp_path / "cp.sqlite" if checkpointer == "sqlite" else None
    async with make_client(tmp_path / "store") as tools, open_checkpointer(where) as saver:
        agent = build_agent(
            policy=policy or expert_policy(), tools=tools, config=config, checkpointer=saver, **compile_args
        )
        yield agent, tools


def thread(task: Task = DOG) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id_for(task, 0)}}


def assistant(state: dict[str, Any], node: str) -> list[Message]:
    return [m for m in state["messages"] if m.role == "assistant" and m.node == node]


@pytest.mark.parametrize("checkpointer", ["sqlite", "memory"])
async def test_review_pauses_with_each_new_image_and_approve_keeps_the_policys_turn(
    tmp_path: Path, checkpointer: str
) -> None:
    async with reviewed(tmp_path, checkpointer=checkpointer) as (agent, _):
        with anyio.fail_after(60):
            paused = await run_task(agent, DOG)
            snapshot = await agent.aget_state(thread())
            assert snapshot.next == ("review",)
            (payload,) = paused.interrupts
            proposed: TurnRecord = snapshot.values["proposed"]
            (image,) = payload["images"]
            made = [c for c in snapshot.values["tool_calls"] if c.by == "policy" and c.handle]
            assert image["handle"] == made[-1].handle
            assert image["uri"] == f"image://{image['handle']}"
            assert image["step"] == 1
            assert image["tool"] == "text_to_image"
            assert image["inspection"]["objects"][0]["kind"] == "dog"
            (verdict,) = proposed.parsed.reflections
            assert image["proposed"] == {"verdict": verdict.verdict, "faults": list(verdict.faults)}
            assert payload["proposed"]["text"] == proposed.text
            head, _, data = image["preview"].partition(",")
            assert head == "data:image/png;base64"
            with Image.open(io.BytesIO(base64.b64decode(data))) as thumb:  # noqa: TID251 - our own thumbnail
                assert max(thumb.size) == 128
            # Nothing ran while paused: the policy's turn is not in the conversation yet.
            assert assistant(snapshot.values, "reflect") == []

            done = await agent.ainvoke(Command(resume={"action": "approve", "who": "ana"}), thread())
        state = (await agent.aget_state(thread())).values
    assert done["termination"] == "answered"
    reflect = next(t for t in state["turns"] if t.node == "reflect")
    assert reflect.text == proposed.text
    assert reflect.review is not None
    assert (reflect.review.action, reflect.review.who) == ("approve", "ana")
    assert reflect.review.verdicts == (verdict,)
    assert assistant(state, "reflect")[0].content == proposed.text


async def test_redo_with_a_note_relabels_the_image_and_the_next_act_makes_it_again(tmp_path: Path) -> None:
    async with reviewed(tmp_path) as (agent, _):
        with anyio.fail_after(60):
            paused = await run_task(agent, DOG)
            first = paused.interrupts[0]["images"][0]["handle"]
            again = await agent.ainvoke(Command(resume="redo the dog should sit"), thread())
            assert "__interrupt__" in again  # the remade image is reviewed in turn
            done = await agent.ainvoke(Command(resume="approve"), thread())
        state = (await agent.aget_state(thread())).values
    assert done["termination"] == "answered"
    calls = [c for c in state["tool_calls"] if c.by == "policy"]
    assert [c.step for c in calls] == [1, 1]
    assert calls[0].arguments["seed"] != calls[1].arguments["seed"]
    assert done["answer"] == [calls[1].handle]
    assert calls[1].handle != first
    reflect = next(t for t in state["turns"] if t.node == "reflect")
    assert reflect.parsed.reflections[0].verdict == "accept"  # what the policy wrote stays on the record
    assert reflect.review is not None
    assert reflect.review.note == "the dog should sit"
    (label,) = reflect.review.verdicts
    assert (label.verdict, label.faults, label.image) == ("redo", ("the dog should sit",), first)
    # The conversation holds the reviewed turn, which the act turn after it followed.
    seen = parse_turn(assistant(state, "reflect")[0].content)
    assert seen.ok
    assert seen.reflections == (label,)
    assert seen.tool_calls == ()


async def test_revise_replaces_the_plan_and_the_next_act_follows_it(tmp_path: Path) -> None:
    async with reviewed(tmp_path) as (agent, _):
        with anyio.fail_after(60):
            await run_task(agent, DOG)
            revise = {"action": "revise", "plan": NEW_PLAN, "note": "put it on a chair"}
            await agent.ainvoke(Command(resume=revise), thread())
            done = await agent.ainvoke(Command(resume="approve"), thread())
        state = (await agent.aget_state(thread())).values
    assert done["termination"] == "answered"
    assert state["plan"] == Plan.model_validate({"steps": NEW_PLAN})
    calls = [c for c in state["tool_calls"] if c.by == "policy"]
    assert calls[-1].arguments["prompt"] == "a brown dog on a red chair"
    review = next(t for t in state["turns"] if t.node == "reflect").review
    assert review is not None
    assert review.plan == state["plan"]
    assert review.verdicts[0].verdict == "revise"
    assert review.verdicts[0].faults == ("put it on a chair",)


async def test_a_bad_resume_value_is_refused_clearly_and_the_review_can_be_answered_again(tmp_path: Path) -> None:
    async with reviewed(tmp_path) as (agent, _):
        with anyio.fail_after(60):
            await run_task(agent, DOG)
            with pytest.raises(ValidationError, match="a redo needs a note saying what to fix"):
                await agent.ainvoke(Command(resume={"action": "redo"}), thread())
            assert (await agent.aget_state(thread())).next == ("review",)
            stranger = "img_" + "0" * 24
            again = await agent.ainvoke(Command(resume={"action": "redo", "note": "x", "images": [stranger]}), thread())
            (pause,) = again["__interrupt__"]
            assert pause.value["error"].startswith(f"images: {stranger} is not a new image of this review")
            done = await agent.ainvoke(Command(resume="approve"), thread())
    assert done["termination"] == "answered"
    with pytest.raises(ReviewError, match=r"^expected approve, redo <note> or revise <plan JSON>, got 'maybe'$"):
        ReviewDecision.parse("maybe")
    with pytest.raises(ReviewError, match=r"^plan: the plan is not JSON"):
        ReviewDecision.parse("revise [{step: 1}]")
    with pytest.raises(ReviewError, match="only a revise takes a plan, not approve"):
        ReviewDecision.parse({"action": "approve", "plan": NEW_PLAN})


async def test_run_task_asks_the_reviewer_and_refuses_an_answer_that_is_none(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def approve(payload: dict[str, Any]) -> str:
        seen.append(payload)
        return "approve"

    async with reviewed(tmp_path) as (agent, _):
        with anyio.fail_after(60):
            with pytest.raises(ReviewError, match="action"):
                await run_task(agent, DOG, reviewer=lambda _payload: {"verdict": "ok"})
            result = await run_task(agent, DOG, reviewer=approve)
    assert result.resumed
    assert result.interrupts == ()
    assert result.trajectory.termination == "answered"
    assert len(seen) == 1
    assert seen[0]["kind"] == "review"
    assert [t.review.action for t in result.trajectory.turns if t.review] == ["approve"]


def test_reviewed_turn_segments_are_what_its_text_parses_into() -> None:
    text = (
        '<think>The dog looks fine.</think>\n<reflect>{"verdict": "accept", "faults": [], "image": "img_a"}</reflect>\n'
        '<reflect>{"verdict": "redo", "faults": ["blurry"], "image": "img_b"}</reflect>\n'
        '<tool_call>{"name": "text_to_image", "arguments": {"prompt": "a cat"}, "step": 2}</tool_call>'
    )
    turn = PolicyTurn(text=text, parsed=parse_turn(text))
    for decision in ("redo too dark", ReviewDecision(action="revise", plan=Plan.model_validate({"steps": NEW_PLAN}))):
        out, review = reviewed_turn(turn, ReviewDecision.parse(decision), ["img_a", "img_b"])
        assert out.parsed == parse_turn(out.text)
        assert out.text.startswith("<think>The dog looks fine.</think>\n")
        assert [r.image for r in out.parsed.reflections] == ["img_a", "img_b"]
        assert out.parsed.tool_calls == ()
        assert review.verdicts == out.parsed.reflections
    same, review = reviewed_turn(turn, ReviewDecision(action="approve"), ["img_a", "img_b"])
    assert same is turn
    assert [r.verdict for r in review.verdicts] == ["accept", "redo"]
    partial, _ = reviewed_turn(turn, ReviewDecision(action="redo", note="n", images=("img_a",)), ["img_a", "img_b"])
    assert [(r.verdict, r.faults) for r in partial.parsed.reflections] == [("redo", ("n",)), ("redo", ("blurry",))]


async def test_interrupt_before_reflect_pauses_there_and_resumes(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store") as tools, open_checkpointer(tmp_path / "cp.sqlite") as saver:
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver, interrupt_before=["reflect"])
        with anyio.fail_after(60):
            first = await run_task(agent, DOG)
            assert (await agent.aget_state(thread())).next == ("reflect",)
            assert [t.node for t in first.state["turns"]] == ["plan", "act"]
            assert first.interrupts == ()
            pauses = 1
            result = await run_task(agent, DOG)
            while not result.state.get("termination"):
                assert (await agent.aget_state(thread())).next == ("reflect",)
                pauses += 1
                result = await run_task(agent, DOG)
        after = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver, interrupt_after=["plan"])
        with anyio.fail_after(60):
            other = Task(request="a red car")
            await run_task(after, other)
            assert (await after.aget_state(thread(other))).next == ("act",)
    assert result.resumed
    assert result.state["termination"] == "answered"
    assert pauses == sum(t.node == "reflect" for t in result.state["turns"])


async def test_a_pause_for_review_is_not_running_time(tmp_path: Path) -> None:
    async def slow_approval(_payload: dict[str, Any]) -> str:
        await asyncio.sleep(1.5)
        return "approve"

    async with reviewed(tmp_path, budgets=Budgets(wall_time_s=1.0)) as (agent, _):
        with anyio.fail_after(60):
            result = await run_task(agent, DOG, reviewer=slow_approval)
    assert result.state["termination"] == "answered"
    assert result.wall_s > 1.5
    assert result.state["run_s"] < 1.0


async def test_running_time_counts_against_the_budget_across_a_crash_but_not_the_gap(tmp_path: Path) -> None:
    # 0.6 s a turn, 1.5 s budget: plan and act run (1.2 s), the run crashes at reflect, and resumes 1.6 s
    # later. The reflect turn still fits (the gap is not counted); the act turn after it does not (the
    # 1.2 s before the crash are).
    budgets = Budgets(wall_time_s=1.5)
    crashing = CrashAt(SlowPolicy(expert_policy(), 0.6), node="reflect")
    config = AgentConfig(budgets=budgets)
    async with make_client(tmp_path / "store") as tools:
        async with open_checkpointer(tmp_path / "cp.sqlite") as saver:
            agent = build_agent(policy=crashing, tools=tools, config=config, checkpointer=saver)
            with anyio.fail_after(60), pytest.raises(RuntimeError, match="injected crash at reflect"):
                await run_task(agent, DOG)
            before = (await agent.aget_state(thread())).values["run_s"]
        await asyncio.sleep(1.6)
        async with open_checkpointer(tmp_path / "cp.sqlite") as saver:
            agent = build_agent(policy=SlowPolicy(expert_policy(), 0.6), tools=tools, config=config, checkpointer=saver)
            with anyio.fail_after(60):
                result = await run_task(agent, DOG)
    assert 1.2 <= before < 1.5
    assert result.resumed
    assert [t.node for t in result.state["turns"]] == ["plan", "act", "reflect"]
    assert result.state["termination"] == "budget_wall_time"
    assert result.state["run_s"] >= before + 0.6


def test_run_review_at_the_terminal(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "visioncreator.graph", "run", "a brown dog", "--out", str(out), "--review"]
    done = subprocess.run(
        cli, input="maybe\nredo the dog should sit\n", capture_output=True, text=True, timeout=120, check=False
    )
    # The input ends at the second review: the run stops there, paused, and says how to go on.
    assert done.returncode == 1, done.stderr
    assert "not an answer: expected approve, redo <note> or revise <plan JSON>, got 'maybe'" in done.stderr
    assert "the policy proposes: accept" in done.stderr
    assert "end of input" in done.stderr
    assert "run the same command again" in done.stderr
    shown = [line.strip() for line in done.stderr.splitlines() if line.strip().endswith(".png")]
    assert len(shown) == 2
    assert all(Path(p).is_file() for p in shown)
    resumed = subprocess.run(cli, input="approve\n", capture_output=True, text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed thread" in resumed.stderr
    trajectory = json.loads((out / "trajectory.json").read_text())
    reviews = [t["review"] for t in trajectory["turns"] if t["node"] == "reflect"]
    assert [r["action"] for r in reviews] == ["redo", "approve"]
    assert reviews[0]["verdicts"][0]["faults"] == ["the dog should sit"]
    assert trajectory["config"]["review"] is True
    assert json.loads(resumed.stdout)["termination"] == "answered"
