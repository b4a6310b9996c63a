"""Outcome rewards: whether the answer is well made, and how much of the task's checklist it satisfies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visioncreator.rl.rewards.base import RewardContext, RewardResult, truth_of
from visioncreator.tool_servers.synthetic import checklist_for_spec, parse_prompt, verify

if TYPE_CHECKING:  # the graph package pulls in LangGraph; rewards only read the record
    from visioncreator.graph import Trajectory

__all__ = ["outcome_reward", "policy_answer", "result_reward"]


def policy_answer(trajectory: Trajectory) -> list[str]:
    """The answer the policy wrote: empty when the graph had to repair it (``answer_repaired``)."""
    if trajectory.answer_repaired:
        return list(trajectory.policy_answer or [])
    return list(trajectory.answer)


def result_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """1 when the answer the policy wrote is well made, else 0.

    Well made: exactly ``n_images`` handles, no duplicates, each produced by a successful image
    tool call of this trajectory or, for img2img, one of the task's inputs. An answer the graph
    repaired (``answer_repaired``: the policy's was missing or named unknown images) earns 0.
    """
    if trajectory.answer_repaired:
        return RewardResult(0.0, {"repaired": True, "policy_answer": trajectory.policy_answer})
    answer = list(trajectory.answer)
    made = {c.handle for c in trajectory.images_made() if c.handle}
    if trajectory.task.split == "img2img":
        made |= set(trajectory.task.inputs)
    n = trajectory.task.n_images
    right_size = len(answer) == n
    unique = len(set(answer)) == len(answer)
    unknown = [h for h in answer if h not in made]
    ok = right_size and unique and not unknown
    return RewardResult(
        float(ok), {"n_answer": len(answer), "right_size": right_size, "unique": unique, "unknown": unknown}
    )


def outcome_reward(trajectory: Trajectory, context: RewardContext) -> RewardResult:
    """Fraction of checklist items the ground-truth scenes of the policy's own answer satisfy.

    Items come from ``context.checklist``, else (single tasks only) from the request parsed with
    ``parse_prompt``. The value is 0 when the answer has the wrong number of images, an image
    without ground truth, or there is no checklist. ``details["success"]`` is 1.0 when every
    item passes, else 0.0.
    """
    checklist = list(context.checklist)
    if not checklist and trajectory.task.split == "single":
        checklist = checklist_for_spec(parse_prompt(trajectory.task.request))
    answer = policy_answer(trajectory)
    truths = [truth_of(trajectory.truths, h) for h in answer]
    scenes = [t.scene for t in truths if t is not None]
    n = trajectory.task.n_images
    if not checklist or len(answer) != n or len(scenes) != n:
        reason = "no checklist" if not checklist else "wrong-sized answer or unknown images"
        return RewardResult(0.0, {"success": 0.0, "passed": 0, "items": len(checklist), "reason": reason})
    results = verify(checklist, scenes, context.input_scenes)
    passed = sum(r.passed for r in results)
    failed = [r.model_dump() for r in results if not r.passed]
    success = float(passed == len(results))
    return RewardResult(
        passed / len(results), {"success": success, "passed": passed, "items": len(results), "failed": failed}
    )
