"""The rewards of visioncreator.rl on hand-made trajectories with known answers, and on real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.graph.conftest import make_client, run
from tests.records import image_call, trajectory, turn_record
from visioncreator.graph.trajectory import Trajectory, build_trajectory
from visioncreator.policy import Node, Task
from visioncreator.rl import (
    RewardContext,
    RewardResult,
    RewardWeights,
    format_reward,
    outcome_reward,
    plan_reward,
    reflection_reward,
    result_reward,
    score,
    tool_reward,
)
from visioncreator.rl.rewards import Judgement, judgements
from visioncreator.tool_servers.scene import Fault, GroundTruth, Scene, SceneObject
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.checklist import checklist_for_spec
from visioncreator.tool_servers.synthetic.prompt import parse_prompt

REQUEST = "two red apples to the left of a blue bowl"
GOOD = "img_" + "a" * 24
BAD = "img_" + "b" * 24
OTHER = "img_" + "c" * 24


def _scene(apple_color: str) -> Scene:
    apples = [
        SceneObject(id=i, kind="apple", color=apple_color, box=(10 + 60 * i, 200, 60 + 60 * i, 250), identity=f"a{i}")
        for i in range(2)
    ]
    bowl = SceneObject(id=2, kind="bowl", color="blue", box=(350, 200, 450, 260), identity="b")
    return Scene(width=512, height=512, objects=(*apples, bowl))


def _truth(apple_color: str = "red", *, faulty: bool = False) -> dict[str, Any]:
    faults = (Fault(type="wrong_color", subject="apple", detail="apple: red -> green"),) if faulty else ()
    return GroundTruth(scene=_scene(apple_color), faults=faults, tool="text_to_image", prompt=REQUEST).model_dump()


def _seg(kind: str, body: Any) -> str:
    return f"<{kind}>{json.dumps(body)}</{kind}>"


def _plan(*prompts: str, tools: tuple[str, ...] = ()) -> str:
    steps = [
        {"step": i + 1, "goal": p, "tool": (tools[i] if tools else "text_to_image"), "prompt": p}
        for i, p in enumerate(prompts)
    ]
    return "<think>plan it</think>" + _seg("plan", steps)


def _call(name: str = "text_to_image", step: int = 1) -> str:
    return _seg("tool_call", {"name": name, "arguments": {"prompt": REQUEST}, "step": step})


def _reflect(handle: str | None, verdict: str, faults: list[str] | None = None) -> str:
    default = [] if verdict == "accept" else ["wrong colour"]
    body = {"verdict": verdict, "faults": default if faults is None else faults}
    return _seg("reflect", body if handle is None else {**body, "image": handle})


def _answer(*handles: str) -> str:
    return _seg("answer", {"images": list(handles)})


def _record(
    turn: int, handle: str | None, *, ok: bool = True, step: int = 1, name: str = "text_to_image"
) -> dict[str, Any]:
    return {
        "id": f"call_{turn}",
        "batch": str(turn),
        "turn": turn,
        "by": "policy",
        "name": name,
        "arguments": {"prompt": REQUEST},
        "step": step,
        "ok": ok,
        "result": {"handle": handle} if ok else None,
        "error": None if ok else "backend failed",
        "handle": handle if ok else None,
        "latency_s": 0.01,
    }


def _trajectory(
    turns: list[tuple[Node, str]],
    calls: list[Any],
    answer: list[str],
    truths: dict[str, Any],
    *,
    n_images: int = 1,
    split: str = "single",
    request: str = REQUEST,
) -> Trajectory:
    return trajectory(
        [turn_record(i, node, text) for i, (node, text) in enumerate(turns)],
        calls,
        task=Task(request=request, n_images=n_images, split=split),
        answer=answer,
        truths=truths,
    )


def _good_run(verdict: str = "accept", *, faulty: bool = False) -> Trajectory:
    handle = BAD if faulty else GOOD
    return _trajectory(
        [("plan", _plan(REQUEST)), ("act", _call()), ("reflect", _reflect(handle, verdict)), ("act", _answer(handle))],
        [_record(1, handle)],
        [handle],
        {handle: _truth("green" if faulty else "red", faulty=faulty)},
    )


CTX = RewardContext()


def test_a_clean_run_earns_every_reward() -> None:
    rewards = score(_good_run(), CTX)
    assert {k: r.value for k, r in rewards.components.items()} == {
        "format": 1.0,
        "tool": 1.0,
        "result": 1.0,
        "plan": 1.0,
        "reflection": 1.0,
        "outcome": 1.0,
    }
    assert rewards.total == pytest.approx(1.0)
    assert rewards.components["reflection"].details["tn"] == 1
    assert rewards.components["outcome"].details["success"] == 1.0


def test_a_missed_fault_is_a_false_negative() -> None:
    traj = _good_run("accept", faulty=True)
    r = reflection_reward(traj, CTX)
    assert r.value == 0.0
    assert (r.details["fn"], r.details["tp"], r.details["fp"], r.details["tn"]) == (1, 0, 0, 0)
    out = outcome_reward(traj, CTX)
    assert out.value == pytest.approx(4 / 5)  # the apples' colour item fails
    assert out.details["success"] == 0.0


def test_a_caught_fault_is_a_true_positive() -> None:
    r = reflection_reward(_good_run("redo", faulty=True), CTX)
    assert (r.value, r.details["tp"]) == (1.0, 1)


def test_a_flagged_good_image_is_a_false_positive() -> None:
    r = reflection_reward(_good_run("revise"), CTX)
    assert r.value == 0.0
    assert (r.details["fp"], r.details["tn"]) == (1, 0)


def test_a_plan_that_omits_an_image_loses_count_and_coverage() -> None:
    second = "a blue bowl below a red umbrella"
    checklist = (*checklist_for_spec(parse_prompt(REQUEST), 0), *checklist_for_spec(parse_prompt(second), 1))
    traj = _trajectory([("plan", _plan(REQUEST))], [], [], {}, n_images=2, split="multi")
    r = plan_reward(traj, RewardContext(checklist=checklist))
    assert r.details["count"] == 0.5
    assert r.details["tools"] == 1.0
    assert r.details["prompts"] == pytest.approx(5 / len(checklist))
    full = _trajectory(
        [("plan", _plan(REQUEST, second, tools=("text_to_image", "reference_to_image")))],
        [],
        [],
        {},
        n_images=2,
        split="multi",
    )
    assert plan_reward(full, RewardContext(checklist=checklist)).value == 1.0
    wrong_tool = _trajectory([("plan", _plan(REQUEST, second))], [], [], {}, n_images=2, split="multi")
    assert plan_reward(wrong_tool, RewardContext(checklist=checklist)).details["tools"] == 0.5


def test_a_prompt_that_drops_a_constraint_loses_coverage() -> None:
    traj = _trajectory([("plan", _plan("two apples to the left of a blue bowl"))], [], [], {})
    r = plan_reward(traj, RewardContext(checklist=tuple(checklist_for_spec(parse_prompt(REQUEST)))))
    assert r.details["prompts"] == pytest.approx(4 / 5)  # the apples' colour is not asked for


def test_no_plan_scores_zero() -> None:
    assert plan_reward(_trajectory([("act", _answer(GOOD))], [], [GOOD], {}), CTX).value == 0.0


def test_a_junk_turn_lowers_format() -> None:
    clean = _good_run()
    turns = [(t.node, t.text) for t in clean.turns]
    junk = _trajectory(
        [*turns[:2], ("act", "sure, here you go!"), *turns[2:]], clean.tool_calls, clean.answer, clean.truths
    )
    r = format_reward(junk, CTX)
    assert r.value == pytest.approx(4 / 5)
    assert r.details["bad_turns"] == [2]


def test_format_wants_tag_order_and_a_reflection_per_new_image() -> None:
    out_of_order = _trajectory(
        [("plan", _seg("plan", [{"step": 1, "goal": "x", "tool": "text_to_image"}]) + "<think>late</think>")],
        [],
        [],
        {},
    )
    assert format_reward(out_of_order, CTX).value == 0.0
    unreflected = _trajectory(
        [("act", _call() + _call(step=2)), ("reflect", _reflect(GOOD, "accept"))],
        [_record(0, GOOD), _record(0, OTHER, step=2)],
        [],
        {},
    )
    assert format_reward(unreflected, CTX).details["bad_turns"] == [1]


def test_a_self_corrected_tool_error_earns_partial_credit() -> None:
    traj = _trajectory(
        [("act", _call()), ("act", _call()), ("act", _call("no_such_tool", step=2)), ("act", _answer(GOOD))],
        [_record(0, None, ok=False), _record(1, GOOD)],
        [GOOD],
        {GOOD: _truth()},
    )
    r = tool_reward(traj, RewardContext(self_corrected_credit=0.5))
    assert (r.details["ok"], r.details["self_corrected"], r.details["failed"], r.details["refused"]) == (1, 1, 0, 1)
    assert r.value == pytest.approx((1 + 0.5) / 3)
    uncorrected = _trajectory([("act", _call())], [_record(0, None, ok=False)], [], {})
    assert tool_reward(uncorrected, CTX).value == 0.0


def test_doing_nothing_earns_no_process_reward() -> None:
    # Measured before: an untrained model that wrote no call got tool 1.0 and reflection 1.0 (total 0.200).
    idle = _trajectory([("act", "I cannot help with that.")], [], [], {})
    assert tool_reward(idle, CTX).value == 0.0
    assert reflection_reward(idle, CTX).value == 0.0
    assert score(idle, CTX).total == 0.0
    no_calls = _trajectory([("plan", _plan(REQUEST)), ("act", _answer())], [], [], {})
    r = tool_reward(no_calls, CTX)
    assert (r.value, r.details["calls"], r.details["refused"]) == (0.0, 0, 0)
    assert score(no_calls, CTX).components["tool"].value == 0.0


def test_a_wrong_sized_answer_fails_result_and_outcome() -> None:
    clean = _good_run()
    turns = [(t.node, t.text) for t in clean.turns[:-1]]
    traj = _trajectory([*turns, ("act", _answer(GOOD, GOOD))], clean.tool_calls, [GOOD, GOOD], clean.truths)
    r = result_reward(traj, CTX)
    assert r.value == 0.0
    assert (r.details["right_size"], r.details["unique"]) == (False, False)
    out = outcome_reward(traj, CTX)
    assert (out.value, out.details["success"]) == (0.0, 0.0)
    stranger = _trajectory(turns, clean.tool_calls, [OTHER], {OTHER: _truth()})
    assert result_reward(stranger, CTX).details["unknown"] == [OTHER]


def test_weights_combine_and_validate() -> None:
    traj = _good_run("accept", faulty=True)
    only_reflection = RewardWeights(format=0, tool=0, result=0, plan=0, reflection=1, outcome=0)
    assert score(traj, CTX, only_reflection).total == 0.0
    assert score(traj, CTX, RewardWeights(format=1, tool=0, result=0, plan=0, reflection=0, outcome=0)).total == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        RewardWeights(outcome=-1)
    with pytest.raises(ValueError, match="outside"):
        RewardResult(1.5)


@pytest.mark.parametrize("fault_rate", [0.0, 1.0])
async def test_an_expert_run_scores_as_the_expert_behaved(tmp_path: Path, fault_rate: float) -> None:
    store = tmp_path / "store"
    async with make_client(store, fault_rate=fault_rate) as tools:
        with anyio.fail_after(60):
            result = await run(tools, Task(request=REQUEST))
    state = result.state
    images = ImageStore(store)
    handles = {str(c.handle) for c in state["tool_calls"] if c.handle}
    truths = {h: t.model_dump() for h in handles if (t := images.truth(h)) is not None}
    traj = build_trajectory(state, thread_id="t", wall_s=1.0, truths=truths)
    rewards = score(traj, RewardContext(checklist=tuple(checklist_for_spec(parse_prompt(REQUEST)))))
    values = {k: r.value for k, r in rewards.components.items()}
    assert values["format"] == 1.0
    assert values["tool"] == 1.0
    assert values["plan"] == 1.0
    if fault_rate == 0.0:
        assert values == dict.fromkeys(values, 1.0)
        assert rewards.components["reflection"].details["tn"] >= 1
    else:
        # Every image is faulty: the expert redoes them, then accepts the last one when its redos
        # run out, naming the fault: a forced decision, not scored.
        counts = rewards.components["reflection"].details
        assert counts["tp"] >= 1
        assert counts["forced"] == 1
        assert counts["tn"] == counts["fp"] == counts["fn"] == counts["unjudged"] == 0
        assert values["reflection"] == 1.0


# ---- which images needed judging, and how reflections bind to them ----------------------------

TRUTHS = {GOOD: _truth(), BAD: _truth("green", faulty=True), OTHER: _truth()}


def _judged(turns: list[tuple[Node, str]], calls: list[Any], **config: Any) -> Trajectory:
    records = [turn_record(i, node, text) for i, (node, text) in enumerate(turns)]
    return trajectory(records, calls, truths=TRUTHS, config=config)


def _verdicts(traj: Trajectory) -> list[tuple[str | None, str | None, bool | None]]:
    return [(j.image, j.verdict, j.correct) for j in judgements(traj)]


def test_an_unnamed_accept_of_a_lone_faulty_image_is_bound_and_wrong() -> None:
    # Measured before: reflection 1.0 and format 1.0, as if nothing had been misjudged.
    traj = _judged([("act", _call()), ("reflect", _reflect(None, "accept"))], [image_call(0, BAD)])
    assert judgements(traj) == [
        Judgement(turn=1, image=BAD, call_id=f"call_0_{BAD}", verdict="accept", faulty=True, correct=False)
    ]
    r = reflection_reward(traj, CTX)
    assert (r.value, r.details["fn"], r.details["cases"]) == (0.0, 1, 1)
    assert format_reward(traj, CTX).value == 1.0  # a lone image may take an unnamed verdict


def test_a_reflection_naming_an_unknown_handle_or_judging_twice_binds_to_nothing() -> None:
    traj = _judged([("act", _call()), ("reflect", _reflect(OTHER, "redo"))], [image_call(0, BAD)])
    assert _verdicts(traj) == [(BAD, None, False)]
    r = reflection_reward(traj, CTX)
    assert (r.value, r.details["unjudged"]) == (0.0, 1)
    assert format_reward(traj, CTX).details["bad_turns"] == [1]
    twice = _judged(
        [("act", _call()), ("reflect", _reflect(BAD, "accept") + _reflect(BAD, "redo"))], [image_call(0, BAD)]
    )
    assert _verdicts(twice) == [(BAD, "accept", False)]  # the first verdict stands
    assert format_reward(twice, CTX).details["bad_turns"] == [1]


@pytest.mark.parametrize("reflect_text", ["", "<think>looks fine</think>"])
def test_an_image_no_reflection_judged_is_wrong(reflect_text: str) -> None:
    traj = _judged([("act", _call()), ("reflect", reflect_text)], [image_call(0, GOOD)])
    assert _verdicts(traj) == [(GOOD, None, False)]
    assert reflection_reward(traj, CTX).value == 0.0
    assert 1 in format_reward(traj, CTX).details["bad_turns"]


def test_without_an_image_to_judge_reflection_earns_nothing() -> None:
    no_calls = _judged([("plan", _plan(REQUEST)), ("act", _answer())], [])
    r = reflection_reward(no_calls, CTX)
    assert (judgements(no_calls), r.value, r.details["cases"], r.details["needed"]) == ([], 0.0, 0, 0)
    turns: list[tuple[Node, str]] = [("act", _call()), ("act", _answer(GOOD))]
    off = _judged(turns, [image_call(0, GOOD)], reflect=False)
    assert (judgements(off), reflection_reward(off, CTX).value) == ([], 0.0)
    # Unrecorded, no reflect turn means the loop ran without one; recorded on, the image went unjudged.
    assert judgements(_judged(turns, [image_call(0, GOOD)])) == []
    assert _verdicts(_judged(turns, [image_call(0, GOOD)], reflect=True)) == [(GOOD, None, False)]


def test_named_reflections_bind_first_then_unnamed_ones_in_order_failed_calls_too() -> None:
    # The expert's way: an unnamed redo for a failed call, named verdicts for images.
    calls = [image_call(0, None, ok=False, step=1), image_call(0, GOOD, step=2), image_call(0, BAD, step=3)]
    text = _reflect(BAD, "redo") + _reflect(None, "redo", ["tool error"]) + _reflect(GOOD, "accept")
    traj = _judged([("act", _call() * 3), ("reflect", text)], calls)
    assert _verdicts(traj) == [(None, "redo", None), (GOOD, "accept", True), (BAD, "redo", True)]
    r = reflection_reward(traj, CTX)
    assert (r.value, r.details["tp"], r.details["tn"], r.details["cases"]) == (1.0, 1, 1, 2)
    assert format_reward(traj, CTX).value == 1.0


def test_unnamed_verdicts_on_several_images_bind_in_order_but_are_malformed() -> None:
    calls = [image_call(0, BAD, step=1), image_call(0, GOOD, step=2)]
    traj = _judged([("act", _call() * 2), ("reflect", _reflect(None, "redo") + _reflect(None, "accept"))], calls)
    assert _verdicts(traj) == [(BAD, "redo", True), (GOOD, "accept", True)]
    assert reflection_reward(traj, CTX).value == 1.0
    assert format_reward(traj, CTX).details["bad_turns"] == [1]


def test_a_redo_written_at_a_reflect_turn_is_judged_by_the_next_one() -> None:
    redo: tuple[Node, str] = ("reflect", _reflect(BAD, "redo") + _call())
    turns: list[tuple[Node, str]] = [("act", _call()), redo, ("reflect", _reflect(GOOD, "accept")), ("act", _call())]
    calls = [image_call(0, BAD), image_call(1, GOOD), image_call(3, OTHER)]
    found = [(j.turn, j.image, j.verdict, j.correct) for j in judgements(_judged(turns, calls))]
    # The last image came after the last reflect turn: the run ended before one judged it.
    assert found == [(1, BAD, "redo", True), (2, GOOD, "accept", True), (-1, OTHER, None, False)]


def _budget_run(last_verdict: str) -> Trajectory:
    """Step 1 called four times (three redos, the budget), every image faulty; ``last_verdict`` on the last."""
    handles = [f"img_{c * 24}" for c in "defg"]
    turns: list[tuple[Node, str]] = [("act", _call())]
    for k, h in enumerate(handles):
        last = k == len(handles) - 1
        turns.append(("reflect", (last_verdict.replace("IMG", h) if last else _reflect(h, "redo") + _call())))
    calls = [image_call(k, h) for k, h in enumerate(handles)]  # turn k wrote the call of image k
    truths = {h: _truth("green", faulty=True) for h in handles}
    records = [turn_record(i, n, t) for i, (n, t) in enumerate(turns)]
    return trajectory(records, calls, truths=truths, config={"max_redos_per_image": 3})


def test_an_accept_forced_by_the_redo_budget_is_not_scored_when_it_lists_the_faults() -> None:
    forced = _budget_run(_reflect("IMG", "accept", ["wrong colour"]))
    assert [j.correct for j in judgements(forced)] == [True, True, True, None]
    r = reflection_reward(forced, CTX)
    assert (r.value, r.details["cases"], r.details["forced"]) == (1.0, 3, 1)
    blind = _budget_run(_reflect("IMG", "accept"))  # accepted without naming a fault: it did not see it
    assert [j.correct for j in judgements(blind)] == [True, True, True, False]
    assert reflection_reward(blind, CTX).value == pytest.approx(3 / 4)
