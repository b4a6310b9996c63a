"""Process rewards: how well the policy wrote its turns, called tools, planned and reflected."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visioncreator.policy import ParsedTurn, PlanStep, Reflection, ToolCall
from visioncreator.rl.rewards.base import RewardContext, RewardResult, last_plan, parsed_turns, truth_of
from visioncreator.tool_servers import IMAGE_TOOLS, ToolName
from visioncreator.tool_servers.synthetic import CheckItem, checklist_for_spec, parse_prompt

if TYPE_CHECKING:  # the graph package pulls in LangGraph; rewards only read the record
    from visioncreator.graph import Trajectory

__all__ = ["format_reward", "plan_reward", "reflection_reward", "tool_reward"]

# Tag order within a turn: think first, then the plan, then calls or reflections, the answer last.
_RANK = {"think": 0, "plan": 1, "tool_call": 2, "reflect": 2, "answer": 3}
# Checks a prompt can express (edit checks such as "preserved" come from instructions, not prompts).
_PROMPT_CHECKS = frozenset({"count", "color", "position", "text", "style"})


def _new_images(trajectory: Trajectory, after: int, before: int) -> list[str]:
    """Handles the policy's image calls made from turns in ``(after, before)``."""
    return [c.handle for c in trajectory.images_made(by="policy") if c.handle and after < c.turn < before]


def _has_what_node_asks(node: str, parsed: ParsedTurn, new_images: list[str]) -> bool:
    kinds = [s.kind for s in parsed.segments]
    if node == "plan":
        return "plan" in kinds
    if node == "act":
        return "tool_call" in kinds or "answer" in kinds
    if node == "finish":
        return "answer" in kinds
    if node == "reflect":
        named = {s.value.image for s in parsed.segments if isinstance(s.value, Reflection)}
        if None in named:  # an unnamed reflection covers a lone new image
            return kinds.count("reflect") >= len(new_images)
        return set(new_images) <= named and "reflect" in kinds
    return False


def format_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """Fraction of policy turns that are well formed.

    A turn counts when :func:`~visioncreator.policy.format.parse_turn` reports no error, its
    segments are in tag order (think, plan, tool calls or reflections, answer), and it holds
    what its node asks for: ``plan`` a plan; ``act`` a tool call or an answer; ``reflect`` one
    reflection naming each image the policy's calls made since the previous reflect turn (an
    unnamed one stands for one image); ``finish`` an answer. No policy turn scores 0.
    """
    turns = parsed_turns(trajectory)
    good = 0
    bad: list[int] = []
    last_reflect = -1
    for turn, parsed in turns:
        index, node = turn.index, turn.node
        ranks = [_RANK[s.kind] for s in parsed.segments]
        ok = not parsed.errors and ranks == sorted(ranks)
        ok = ok and _has_what_node_asks(node, parsed, _new_images(trajectory, last_reflect, index))
        if node == "reflect":
            last_reflect = index
        good += ok
        if not ok:
            bad.append(index)
    value = good / len(turns) if turns else 0.0
    return RewardResult(value, {"turns": len(turns), "well_formed": good, "bad_turns": bad})


def tool_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """Credit per tool call the policy wrote, averaged.

    A successful call earns 1. A failed call earns ``context.self_corrected_credit`` when a later
    successful call serves the same plan step (self-corrected), else 0. A call the graph refused
    (unknown tool, spent budget: written in a turn but never recorded) earns 0. Graph-made calls
    (inspections) do not count. A trajectory with no policy call scores 1: the ``result`` reward
    is what punishes an answer made without tools.
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
    value = credit / total if total else 1.0
    return RewardResult(
        value, {"calls": len(calls), "ok": ok, "self_corrected": corrected, "failed": failed, "refused": refused}
    )


def reflection_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """Accuracy of the policy's verdicts on images with ground truth.

    Every reflection naming an image whose ground truth is known is one case: a true positive
    (faults present, verdict redo or revise), true negative (no faults, accept), false negative
    (faults present but accepted: under-reflection) or false positive (no faults but redo or
    revise: over-reflection). The value is (tp + tn) / cases; with no case it is 1 (nothing was
    misjudged; ``format`` punishes a missing reflection).
    """
    counts = {"tp": 0, "tn": 0, "fp": 0, "fn": 0}
    for _, parsed in parsed_turns(trajectory):
        for s in parsed.segments:
            if not isinstance(s.value, Reflection) or s.value.image is None:
                continue
            truth = truth_of(trajectory.truths, s.value.image)
            if truth is None:
                continue
            flagged = s.value.verdict in ("redo", "revise")
            key = ("tp" if flagged else "fn") if truth.faults else ("fp" if flagged else "tn")
            counts[key] += 1
    cases = sum(counts.values())
    value = (counts["tp"] + counts["tn"]) / cases if cases else 1.0
    return RewardResult(value, {**counts, "cases": cases})


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
