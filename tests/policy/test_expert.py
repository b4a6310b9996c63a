from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from visioncreator.graph import EXPERT_TOOLS
from visioncreator.policy import (
    Answer,
    ExpertConfig,
    ExpertPolicy,
    Message,
    MissingTaskError,
    Node,
    Observation,
    Policy,
    PolicyRequest,
    PolicyTurn,
    Task,
    ToolCall,
    error_message,
    observation_message,
    parse_turn,
    system_message,
    task_message,
)

Inspect = Callable[[ToolCall], dict[str, Any]]


def critic(
    *,
    goal: str,
    tool: str,
    inspection: Mapping[str, Any],
    references: Sequence[Mapping[str, Any]] = (),
    source: Mapping[str, Any] | None = None,
) -> list[str]:
    """Faults from markers in the inspection: some depend on the goal, some do not."""
    faults: list[str] = []
    if inspection.get("broken"):
        faults.append("artefact: smeared subject")
    faults.extend(f"missing object: {word}" for word in inspection.get("missing", ()) if word in goal)
    faults.extend(f"wrong colour: {word}" for word in inspection.get("off_colour", ()) if word in goal)
    if any(r.get("identity") != inspection.get("identity") for r in references):
        faults.append("identity drift")
    if tool == "edit_image" and source is None:
        faults.append("no source to compare with")
    return faults


def clean(call: ToolCall) -> dict[str, Any]:
    return {"identity": "dog-A"}


class Conversation:
    """A conversation driven by the expert and a scripted tool runner."""

    def __init__(self, task: Task, config: ExpertConfig | None = None, seed: int | None = 5) -> None:
        self.policy = ExpertPolicy(critic, EXPERT_TOOLS, config or ExpertConfig())
        self.messages: list[Message] = [system_message([], {"max_turns": 20}), task_message(task)]
        self.seed = seed
        self._ids = itertools.count()

    async def turn(self, node: Node) -> PolicyTurn:
        request = PolicyRequest(messages=tuple(self.messages), node=node, seed=self.seed)
        turn = await asyncio.wait_for(self.policy.respond(request), timeout=5)
        assert turn.parsed.ok, turn.parsed.errors
        assert turn.model == "expert"
        assert turn.completion_token_ids is None
        self.messages.append(Message(role="assistant", content=turn.text, node=node))
        return turn

    def observe(self, observations: Sequence[Observation]) -> list[str]:
        self.messages.append(observation_message(observations))
        return [str(o.result["handle"]) for o in observations if o.ok and o.result]

    def run(self, calls: Sequence[ToolCall], inspect: Inspect = clean) -> list[str]:
        observations = []
        for call in calls:
            n = next(self._ids)
            handle = f"img_{n:024x}"
            observations.append(
                Observation(
                    call_id=f"c{n}",
                    name=call.name,
                    arguments=call.arguments,
                    step=call.step,
                    ok=True,
                    result={"handle": handle, "width": 512, "height": 512},
                    inspection=inspect(call),
                )
            )
        return self.observe(observations)


def single(request: str = "a red fox with a blue hat") -> Task:
    return Task(request=request)


async def test_expert_is_a_policy_and_writes_a_plan() -> None:
    conv = Conversation(single())
    assert isinstance(conv.policy, Policy)
    assert conv.policy.name == "expert"
    turn = await conv.turn("plan")
    assert [s.kind for s in turn.parsed.segments] == ["think", "plan"]
    plan = turn.parsed.plan
    assert plan is not None
    (step,) = plan.steps
    assert (step.tool, step.goal, step.prompt) == ("text_to_image", single().request, single().request)


async def test_single_task_plan_act_reflect_answer() -> None:
    conv = Conversation(single())
    await conv.turn("plan")
    act = await conv.turn("act")
    (call,) = act.parsed.tool_calls
    assert call.name == "text_to_image"
    assert call.step == 1
    assert call.arguments["prompt"] == "a red fox with a blue hat"
    assert (call.arguments["width"], call.arguments["height"]) == (512, 512)
    assert isinstance(call.arguments["seed"], int)
    (image,) = conv.run(act.parsed.tool_calls)
    reflect = await conv.turn("reflect")
    assert [(r.verdict, r.faults, r.image) for r in reflect.parsed.reflections] == [("accept", (), image)]
    assert reflect.parsed.tool_calls == ()
    again = await conv.turn("act")
    assert again.parsed.answer == Answer(images=(image,))
    finish = await conv.turn("finish")
    assert finish.parsed.answer == Answer(images=(image,))


async def test_redo_on_a_tool_fault_then_accept() -> None:
    conv = Conversation(single())
    await conv.turn("plan")
    act = await conv.turn("act")
    conv.run(act.parsed.tool_calls, lambda c: {"broken": True})
    reflect = await conv.turn("reflect")
    (r,) = reflect.parsed.reflections
    assert (r.verdict, r.faults) == ("redo", ("artefact: smeared subject",))
    (redo,) = reflect.parsed.tool_calls
    first = act.parsed.tool_calls[0]
    assert redo.step == 1
    assert redo.arguments["seed"] != first.arguments["seed"]
    assert {k: v for k, v in redo.arguments.items() if k != "seed"} == {
        k: v for k, v in first.arguments.items() if k != "seed"
    }
    (image,) = conv.run([redo])
    accept = await conv.turn("reflect")
    assert [(r.verdict, r.image) for r in accept.parsed.reflections] == [("accept", image)]
    assert (await conv.turn("act")).parsed.answer == Answer(images=(image,))


B, MISSING_HAT = {"broken": True}, {"missing": ["hat"]}


@pytest.mark.parametrize(
    ("inspections", "kept"),
    [
        ([B, B, B], 2),  # ties: the latest (here the one accepted)
        ([B | {"off_colour": ["fox"]}, B, B | {"off_colour": ["fox", "hat"]}, MISSING_HAT], 1),  # fewest faults
        ([B | {"off_colour": ["fox"]}, B | {"off_colour": ["hat"]}, MISSING_HAT], 1),  # a missing object weighs most
    ],
)
async def test_max_redos_caps_the_redos_then_the_least_faulty_is_kept(inspections: list[Any], kept: int) -> None:
    conv = Conversation(single(), ExpertConfig(max_redos=len(inspections) - 1))
    await conv.turn("plan")
    calls = (await conv.turn("act")).parsed.tool_calls
    images, verdicts, seeds = [], [], set()
    for inspection in inspections:
        seeds.add(calls[0].arguments["seed"])
        images += conv.run(calls, lambda c, seen=inspection: seen)
        reflect = await conv.turn("reflect")
        verdicts += [r.verdict for r in reflect.parsed.reflections]
        calls = reflect.parsed.tool_calls
    # The reflections stay canonical: redo while the budget lasts, then a forced accept.
    assert verdicts == ["redo"] * (len(inspections) - 1) + ["accept"]
    assert len(seeds) == len(inspections)
    assert (await conv.turn("act")).parsed.answer == Answer(images=(images[kept],))
    assert (await conv.turn("finish")).parsed.answer == Answer(images=(images[kept],))


async def test_later_panels_build_on_the_least_faulty_first_panel() -> None:
    conv = Conversation(MULTI, ExpertConfig(max_redos=1))
    await conv.turn("plan")
    (best,) = conv.run((await conv.turn("act")).parsed.tool_calls, lambda c: {"identity": "dog-A", "broken": True})
    redo = (await conv.turn("reflect")).parsed.tool_calls
    (forced,) = conv.run(redo, lambda c: {"identity": "dog-B", "broken": True, "missing": ["car"]})
    assert [(r.verdict, r.image) for r in (await conv.turn("reflect")).parsed.reflections] == [("accept", forced)]
    rest = (await conv.turn("act")).parsed.tool_calls
    assert [(c.step, c.arguments["references"]) for c in rest] == [(2, [best]), (3, [best])]
    h2, h3 = conv.run(rest, lambda c: {"identity": "dog-A"})
    await conv.turn("reflect")
    assert (await conv.turn("finish")).parsed.answer == Answer(images=(best, h2, h3))


async def test_revise_when_the_plan_prompt_was_wrong() -> None:
    conv = Conversation(single(), ExpertConfig(bad_plan_rate=1.0))
    plan = (await conv.turn("plan")).parsed.plan
    assert plan is not None
    assert plan.steps[0].goal == "a red fox with a blue hat"
    assert plan.steps[0].prompt == "a red fox"
    act = await conv.turn("act")
    assert act.parsed.tool_calls[0].arguments["prompt"] == "a red fox"

    def env(call: ToolCall) -> dict[str, Any]:
        return {} if "hat" in call.arguments["prompt"] else {"missing": ["hat"]}

    conv.run(act.parsed.tool_calls, env)
    reflect = await conv.turn("reflect")
    assert [s.kind for s in reflect.parsed.segments] == ["reflect", "plan", "tool_call"]
    assert reflect.parsed.reflections[0].verdict == "revise"
    assert reflect.parsed.reflections[0].faults == ("missing object: hat",)
    fixed = reflect.parsed.plan
    assert fixed is not None
    assert fixed.steps[0].prompt == "a red fox with a blue hat"
    (call,) = reflect.parsed.tool_calls
    assert call.arguments["prompt"] == "a red fox with a blue hat"
    (image,) = conv.run([call], env)
    assert (await conv.turn("reflect")).parsed.reflections[0].verdict == "accept"
    # The act node reads the revised plan: nothing is pending.
    assert (await conv.turn("act")).parsed.answer == Answer(images=(image,))


MULTI = Task(
    request="Three images of the same brown dog: a brown dog next to a red car; a brown dog below a blue umbrella; "
    'a brown dog with the text "HI"',
    n_images=3,
    split="multi",
)


async def test_multi_first_step_alone_then_the_rest_with_references() -> None:
    conv = Conversation(MULTI)
    plan = (await conv.turn("plan")).parsed.plan
    assert plan is not None
    assert [(s.tool, s.depends_on) for s in plan.steps] == [
        ("text_to_image", ()),
        ("reference_to_image", (1,)),
        ("reference_to_image", (1,)),
    ]
    assert [s.goal for s in plan.steps] == [
        "a brown dog next to a red car",
        "a brown dog below a blue umbrella",
        'a brown dog with the text "HI"',
    ]
    first = (await conv.turn("act")).parsed.tool_calls
    assert [(c.name, c.step) for c in first] == [("text_to_image", 1)]
    (h1,) = conv.run(first)
    assert (await conv.turn("reflect")).parsed.reflections[0].verdict == "accept"
    rest = (await conv.turn("act")).parsed.tool_calls
    assert [(c.name, c.step, c.arguments["references"]) for c in rest] == [
        ("reference_to_image", 2, [h1]),
        ("reference_to_image", 3, [h1]),
    ]
    h2, h3 = conv.run(rest)
    reflect = await conv.turn("reflect")
    assert [(r.verdict, r.image) for r in reflect.parsed.reflections] == [("accept", h2), ("accept", h3)]
    assert (await conv.turn("finish")).parsed.answer == Answer(images=(h1, h2, h3))


async def test_multi_bad_plan_drifts_and_is_revised_to_references() -> None:
    conv = Conversation(MULTI, ExpertConfig(bad_plan_rate=1.0))
    plan = (await conv.turn("plan")).parsed.plan
    assert plan is not None
    assert {s.tool for s in plan.steps} == {"text_to_image"}
    calls = (await conv.turn("act")).parsed.tool_calls
    assert [c.step for c in calls] == [1, 2, 3]

    def env(call: ToolCall) -> dict[str, Any]:
        # Without references, each image gets its own dog.
        return {"identity": "dog-A" if call.step == 1 or call.arguments.get("references") else f"dog-{call.step}"}

    h1, _, _ = conv.run(calls, env)
    reflect = await conv.turn("reflect")
    assert [r.verdict for r in reflect.parsed.reflections] == ["accept", "revise", "revise"]
    assert reflect.parsed.reflections[1].faults == ("identity drift",)
    fixed = reflect.parsed.plan
    assert fixed is not None
    assert [(s.step, s.tool, s.depends_on) for s in fixed.steps] == [
        (2, "reference_to_image", (1,)),
        (3, "reference_to_image", (1,)),
    ]
    redo = reflect.parsed.tool_calls
    assert [(c.name, c.step, c.arguments["references"]) for c in redo] == [
        ("reference_to_image", 2, [h1]),
        ("reference_to_image", 3, [h1]),
    ]
    h2, h3 = conv.run(redo, env)
    assert [r.verdict for r in (await conv.turn("reflect")).parsed.reflections] == ["accept", "accept"]
    assert (await conv.turn("act")).parsed.answer == Answer(images=(h1, h2, h3))


async def test_img2img_edits_the_input_handle_and_checks_against_it() -> None:
    source = "img_" + "ab" * 12
    task = Task(request="make the car blue", split="img2img", inputs=(source,))
    conv = Conversation(task)
    result = {"handle": source, "identity": "car"}
    inspected = Observation(call_id="in0", name="inspect_image", arguments={"image": source}, ok=True, result=result)
    conv.observe([inspected])
    plan = (await conv.turn("plan")).parsed.plan
    assert plan is not None
    assert [(s.tool, s.goal) for s in plan.steps] == [("edit_image", "make the car blue")]
    (call,) = (await conv.turn("act")).parsed.tool_calls
    assert call.name == "edit_image"
    assert call.arguments["image"] == source
    assert call.arguments["instruction"] == "make the car blue"
    (image,) = conv.run([call])
    # The critic faults an edit it cannot compare with its source: accept proves the source was passed.
    reflect = await conv.turn("reflect")
    assert [(r.verdict, r.faults) for r in reflect.parsed.reflections] == [("accept", ())]
    assert (await conv.turn("finish")).parsed.answer == Answer(images=(image,))


async def test_failed_call_is_redone_clamped_then_revised() -> None:
    conv = Conversation(single())
    await conv.turn("plan")
    (call,) = (await conv.turn("act")).parsed.tool_calls
    big = call.model_copy(update={"arguments": {**call.arguments, "width": 4096}})

    def fail(c: ToolCall, n: int) -> Observation:
        return Observation(call_id=f"f{n}", name=c.name, arguments=c.arguments, step=c.step, ok=False, error="too big")

    conv.observe([fail(big, 0)])
    reflect = await conv.turn("reflect")
    (r,) = reflect.parsed.reflections
    assert (r.verdict, r.image) == ("redo", None)
    (redo,) = reflect.parsed.tool_calls
    assert redo.arguments["width"] == 512
    conv.observe([fail(redo, 1)])
    second = await conv.turn("reflect")
    assert second.parsed.reflections[0].verdict == "revise"
    assert second.parsed.plan is not None
    assert len(second.parsed.tool_calls) == 1


async def test_skip_reflection_accepts_without_looking() -> None:
    conv = Conversation(single(), ExpertConfig(skip_reflection_rate=1.0))
    await conv.turn("plan")
    conv.run((await conv.turn("act")).parsed.tool_calls, lambda c: {"broken": True})
    reflect = await conv.turn("reflect")
    assert [(r.verdict, r.faults) for r in reflect.parsed.reflections] == [("accept", ())]
    assert reflect.parsed.tool_calls == ()


async def test_accept_faulty_accepts_but_lists_the_faults() -> None:
    conv = Conversation(single(), ExpertConfig(accept_faulty_rate=1.0))
    await conv.turn("plan")
    conv.run((await conv.turn("act")).parsed.tool_calls, lambda c: {"broken": True})
    reflect = await conv.turn("reflect")
    assert [(r.verdict, r.faults) for r in reflect.parsed.reflections] == [("accept", ("artefact: smeared subject",))]


async def test_over_reflect_redoes_a_good_image_until_the_budget_ends() -> None:
    conv = Conversation(single(), ExpertConfig(over_reflect_rate=1.0, max_redos=1))
    await conv.turn("plan")
    conv.run((await conv.turn("act")).parsed.tool_calls)
    reflect = await conv.turn("reflect")
    (r,) = reflect.parsed.reflections
    assert r.verdict == "redo"
    assert len(r.faults) == 1
    assert r.faults[0]
    conv.run(reflect.parsed.tool_calls)
    assert (await conv.turn("reflect")).parsed.reflections[0].verdict == "accept"


async def test_same_messages_same_text_and_seed_changes_it() -> None:
    async def script(config: ExpertConfig) -> list[str]:
        conv = Conversation(MULTI, config)
        texts = [(await conv.turn("plan")).text]
        act = await conv.turn("act")
        texts.append(act.text)
        conv.run(act.parsed.tool_calls, lambda c: {"broken": True})
        texts.append((await conv.turn("reflect")).text)
        return texts

    config = ExpertConfig(over_reflect_rate=0.5, accept_faulty_rate=0.5, bad_plan_rate=0.5)
    assert await script(config) == await script(config)
    assert await script(config) != await script(ExpertConfig(seed=1))


async def test_format_error_message_does_not_derail_the_expert() -> None:
    conv = Conversation(single())
    conv.messages.append(error_message("plan", [parse_turn("oops").errors[0]]))
    turn = await conv.turn("plan")
    assert turn.parsed.plan is not None


async def test_no_task_is_a_precise_error() -> None:
    policy = ExpertPolicy(critic, EXPERT_TOOLS)
    with pytest.raises(MissingTaskError):
        await policy.respond(PolicyRequest(messages=(Message(role="user", content="hi"),), node="plan"))


async def test_no_think_when_disabled() -> None:
    turn = await Conversation(single(), ExpertConfig(think=False)).turn("plan")
    assert [s.kind for s in turn.parsed.segments] == ["plan"]
