"""Process rewards: how well the policy wrote its turns, called tools, planned and reflected."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visioncreator.policy import ParsedTurn, PlanStep, Reflection, ToolCall
from visioncreator.rl.rewards.base import RewardContext, RewardResult, last_plan, parsed_turns
from visioncreator.rl.rewards.judgements import bind, judgements, rounds
from visioncreator.tool_servers import IMAGE_TOOLS, ToolName
from visioncreator.tool_servers.synthetic import CheckItem, checklist_for_spec, parse_prompt

if TYPE_CHECKING:  # the graph package pulls in LangGraph; rewards only read the record
    from visioncreator.graph import ToolCallRecord, Trajectory

__all__ = ["format_reward", "plan_reward", "reflection_reward", "tool_reward"]

# Tag order within a turn: think first, then the plan, then calls or reflections, the answer last.
_RANK = {"think": 0, "plan": 1, "tool_call": 2, "reflect": 2, "answer": 3}
# Checks a prompt can express (edit checks such as "preserved" come from instructions, not prompts).
_PROMPT_CHECKS = frozenset({"count", "color", "position", "text", "style"})


def _reflect_turn_ok(parsed: ParsedTurn, calls: list[ToolCallRecord]) -> bool:
    """Whether a reflect turn judged its batch: every image bound, nothing dangling, one unnamed image at most.

    More than one image bound by unnamed reflections would leave which is which to their order.
    """
    binding = bind(calls, [s.value for s in parsed.segments if isinstance(s.value, Reflection)])
    judged = all(v is not None for c, v in zip(calls, binding.verdicts, strict=True) if c.ok and c.handle)
    return judged and not binding.dangling and binding.unnamed_images <= 1


def _has_what_node_asks(node: str, parsed: ParsedTurn) -> bool:
    kinds = [s.kind for s in parsed.segments]
    if node == "plan":
        return "plan" in kinds
    if node == "act":
        return "tool_call" in kinds or "answer" in kinds
    if node == "finish":
        return "answer" in kinds
    return node == "reflect"


def format_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """Fraction of policy turns that are well formed.

    A turn counts when :func:`~visioncreator.policy.format.parse_turn` reports no error, its
    segments are in tag order (think, plan, tool calls or reflections, answer), and it holds
    what its node asks for: ``plan`` a plan; ``act`` a tool call or an answer; ``finish`` an
    answer; ``reflect`` a verdict for every image it had to judge, as
    :func:`~visioncreator.rl.rewards.judgements.bind` binds them: no reflection that binds to
    nothing (an unknown handle, a second verdict on one image, a spare unnamed one), and an
    unnamed reflection standing for at most one image (a lone new image; failed calls, which
    have no image to name, may take unnamed ones too). A reflect turn with no image to judge
    (every call failed) may hold no reflection. No policy turn scores 0.
    """
    turns = parsed_turns(trajectory)
    due = {turn.index: calls for turn, calls in rounds(trajectory) if turn is not None}
    good = 0
    bad: list[int] = []
    for turn, parsed in turns:
        ranks = [_RANK[s.kind] for s in parsed.segments]
        ok = not parsed.errors and ranks == sorted(ranks) and _has_what_node_asks(turn.node, parsed)
        if turn.node == "reflect":
            ok = ok and _reflect_turn_ok(parsed, due.get(turn.index, []))
        good += ok
        if not ok:
            bad.append(turn.index)
    value = good / len(turns) if turns else 0.0
    return RewardResult(value, {"turns": len(turns), "well_formed": good, "bad_turns": bad})


def tool_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """Credit per tool call the policy wrote, averaged.

    A successful call earns 1. A failed call earns ``context.self_corrected_credit`` when a later
    successful call serves the same plan step (self-corrected), else 0. A call the graph refused
    (unknown tool, spent budget: written in a turn but never recorded) earns 0. Graph-made calls
    (inspections) do not count.

    A trajectory with no policy call (written or run) scores 0, never 1: a policy that attempts
    nothing has shown no tool use, and must not earn tool credit by avoiding tools (measured
    before: an untrained model that never wrote a call got 1.0 here).
    """
    calls = [c for c in trajectory.tool_calls if c.by == "policy"]
    written: dict[int, int] = {}
    for turn, parsed in parsed_turns(trajectory):
        written[turn.index] = sum(isinstance(s.value, ToolCall) for s in parsed.segments)
    recorded: dict[int, int] = {}
    for c in calls:
        recorded[c.turn] = recorded.get(c.turn, 0) + 1
    refused = sum(max(0, n - recorded.get(i, 0)) for i, n in written.items())
    ok = corrected = failed = 0
    for i, c in enumerate(calls):
        if c.ok:
            ok += 1
        elif c.step is not None and any(later.ok and later.step == c.step for later in calls[i + 1 :]):
            corrected += 1
        else:
            failed += 1
    total = len(calls) + refused
    credit = ok + corrected * context.self_corrected_credit
    value = credit / total if total else 0.0
    return RewardResult(
        value, {"calls": len(calls), "ok": ok, "self_corrected": corrected, "failed": failed, "refused": refused}
    )


def reflection_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """Accuracy of the verdicts on every image that needed judging.

    The cases are the scorable :func:`~visioncreator.rl.rewards.judgements.judgements`: every
    image the policy's calls made while reflection was on, with ground truth, whether a
    reflection judged it or not. Each is a true positive (faults, flagged with redo or revise),
    true negative (no faults, accepted), false negative (faults accepted: under-reflection),
    false positive (no faults but flagged: over-reflection) or unjudged (no reflection bound to
    it: wrong, whatever the truth). A forced accept (faults listed, the step's redos spent) is
    not a case. The value is (tp + tn) / cases.

    With no case the value is 0, never 1: a run that made no image, judged none, or ran with
    reflection off has shown no judgement, and an agent must not earn reflection credit by
    avoiding images (a constant 0 also gives a group with reflection off no signal from it).
    """
    counts = {"tp": 0, "tn": 0, "fp": 0, "fn": 0, "unjudged": 0}
    found = judgements(trajectory)
    for j in found:
        if j.correct is None:
            continue
        if j.verdict is None:
            key = "unjudged"
        elif j.verdict == "accept":
            key = "fn" if j.faulty else "tn"
        else:
            key = "tp" if j.faulty else "fp"
        counts[key] += 1
    cases = sum(counts.values())
    forced = sum(1 for j in found if j.correct is None and j.faulty and j.verdict == "accept")
    value = (counts["tp"] + counts["tn"]) / cases if cases else 0.0
    return RewardResult(value, {**counts, "cases": cases, "forced": forced, "needed": len(found)})


def _tool_fits(split: str, position: int, step: PlanStep) -> bool:
    if split == "img2img":
        return step.tool == ToolName.EDIT_IMAGE
    if split == "multi" and position > 0:
        return step.tool == ToolName.REFERENCE_TO_IMAGE
    return step.tool == ToolName.TEXT_TO_IMAGE


def _key(item: CheckItem) -> tuple[Any, ...]:
    return (item.check, item.subject, item.value, item.relation, item.other)


def _coverage(step: PlanStep, position: int, checklist: tuple[CheckItem, ...]) -> tuple[int, int]:
    """(covered, wanted) checklist items of image ``position`` that the step's prompt would ask for."""
    wanted = [i for i in checklist if i.image == position and i.check in _PROMPT_CHECKS]
    if not checklist:
        wanted = checklist_for_spec(parse_prompt(step.goal), position)
    promised = {_key(i) for i in checklist_for_spec(parse_prompt(step.prompt or step.goal), position)}
    return sum(_key(i) in promised for i in wanted), len(wanted)


def plan_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """How well the last plan covers the task, the mean of three parts in [0, 1].

    ``count``: 1 when the plan has exactly ``n_images`` image steps (steps whose tool makes an
    image), else ``max(0, 1 - |steps - n| / n)``. ``tools``: fraction of the image steps whose
    tool fits the split (single: text_to_image; multi: text_to_image first, reference_to_image
    after; img2img: edit_image). ``prompts``: fraction of the checklist items a prompt can
    express (count, colour, position, text, style) of each planned image that the step's
    ``prompt`` (or its goal), parsed with ``parse_prompt``, would ask for; items come from
    ``context.checklist`` for that image index, else from the step's goal. Images the plan omits
    leave their items uncovered. No plan scores 0.
    """
    plan = last_plan(trajectory)
    if plan is None:
        return RewardResult(0.0, {"plan": False})
    n = trajectory.task.n_images
    split = trajectory.task.split
    steps = [s for s in plan.steps if s.tool in IMAGE_TOOLS]
    count = 1.0 if len(steps) == n else max(0.0, 1.0 - abs(len(steps) - n) / n)
    tools = sum(_tool_fits(split, i, s) for i, s in enumerate(steps)) / len(steps) if steps else 0.0
    covered = wanted = 0
    for i, s in enumerate(steps[:n]):
        c, w = _coverage(s, i, context.checklist)
        covered, wanted = covered + c, wanted + w
    # Items of images no step plans for count as wanted and missed.
    wanted += sum(1 for i in context.checklist if i.image >= len(steps) and i.check in _PROMPT_CHECKS)
    prompts = covered / wanted if wanted else 1.0
    details = {"plan": True, "image_steps": len(steps), "count": count, "tools": tools, "prompts": prompts}
    return RewardResult((count + tools + prompts) / 3, details)
