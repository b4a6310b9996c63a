"""The ``plan`` reward's LLM-judge variant: a judge rates the plan against the request and checklist.

The rule-based :func:`~visioncreator.rl.rewards.process.plan_reward` reads prompts with the
synthetic environment's parser, so it only understands the synthetic vocabulary. This variant
asks an LLM judge (``visioncreator.evals.JudgeClient``: structured output, retries, cache) instead,
which works for any request.

The judge sees the request, the split, the number of images wanted, the checklist (as yes/no
questions) and the last plan's steps, and answers with a short reason, a 0-10 rating of the
plan as a whole, and, per checklist item, whether some step's prompt asks for it. The reward is
the mean of ``rating / 10`` and the fraction of items covered (the rating alone without a
checklist). No plan scores 0 without asking.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from visioncreator.evals import JudgeCache, JudgeClient, JudgeError, JudgeRequest, checklist_question, reason_pattern
from visioncreator.rl.rewards.base import RewardContext, RewardResult, last_plan
from visioncreator.rl.rewards.process import plan_reward

if TYPE_CHECKING:  # the graph package pulls in LangGraph; rewards only read the record
    from visioncreator.graph import Trajectory

__all__ = ["PlanJudge"]

_SYSTEM = (
    "You review plans written by an image-generation agent before it runs them. Be strict and answer only "
    "with the JSON object the schema asks for."
)
_PROMPT = (
    "The agent must answer this {split} task with exactly {n} image(s).\n\nRequest: {request}\n\n"
    "Its plan (ordered steps; 'tool' makes or edits an image from 'prompt'; 'depends_on' lists earlier steps):\n"
    "{plan}\n\n{questions}Rate the plan from 0 to 10: 10 means following it would produce exactly the "
    "requested images with the right tools in a sensible order; 0 means it would not. First give a short reason."
)


def _answer_model(items: int, reason_chars: int) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "reason": (str, Field(pattern=reason_pattern(reason_chars))),
        "rating": (int, Field(ge=0, le=10)),
    }
    if items:
        fields |= {f"q{i}": (Literal["yes", "no"], ...) for i in range(1, items + 1)}
    return create_model("PlanReview", __config__=ConfigDict(extra="forbid"), **fields)


class PlanJudge:
    """An async ``plan`` reward that asks an LLM judge: ``await judge(trajectory, context)``.

    Args:
        client: The judge server's client.
        cache: Where answers are cached; ``None`` caches nothing.
        fallback: When the judge fails (unreachable, unparseable), return the rule-based
            ``plan_reward`` with ``details["fallback"]`` set, instead of raising.
        reason_chars: Longest reason the schema allows.

    """

    def __init__(
        self, client: JudgeClient, cache: JudgeCache | None = None, *, fallback: bool = False, reason_chars: int = 300
    ) -> None:
        self.client = client
        self.cache = cache
        self.fallback = fallback
        self.reason_chars = reason_chars

    def request(self, trajectory: Trajectory, context: RewardContext) -> JudgeRequest | None:
        """The question for a trajectory, or ``None`` when it has no plan."""
        plan = last_plan(trajectory)
        if plan is None:
            return None
        steps = [s.model_dump(exclude_none=True) for s in plan.steps]
        questions = ""
        if context.checklist:
            lines = "\n".join(
                f"q{k}: Does some step's prompt ask for this? {checklist_question(i)} (image {i.image})"
                for k, i in enumerate(context.checklist, start=1)
            )
            questions = f"Checklist the images must satisfy (answer yes or no for each):\n{lines}\n\n"
        prompt = _PROMPT.format(
            split=trajectory.task.split,
            n=trajectory.task.n_images,
            request=trajectory.task.request,
            plan=json.dumps(steps, ensure_ascii=False),
            questions=questions,
        )
        return JudgeRequest(name="plan_review", system=_SYSTEM, prompt=prompt)

    async def __call__(self, trajectory: Trajectory, context: RewardContext) -> RewardResult:
        """The reward in [0, 1]; ``details`` hold the rating, coverage, reason and whether it was cached.

        Raises:
            JudgeError: The judge failed and ``fallback`` is off.

        """
        request = self.request(trajectory, context)
        if request is None:
            return RewardResult(0.0, {"plan": False})
        n_items = len(context.checklist)
        try:
            answer = await self.client.ask(request, _answer_model(n_items, self.reason_chars), cache=self.cache)
        except JudgeError as exc:
            if not self.fallback:
                raise
            rule = plan_reward(trajectory, context)
            return RewardResult(rule.value, {**rule.details, "fallback": True, "error": str(exc)})
        values = answer.value.model_dump()
        rating = values["rating"] / 10
        details: dict[str, Any] = {
            "plan": True,
            "rating": values["rating"],
            "reason": values["reason"],
            "cached": answer.cached,
            "model": answer.model,
        }
        if n_items:
            covered = sum(values[f"q{k}"] == "yes" for k in range(1, n_items + 1))
            details |= {"covered": covered, "items": n_items}
            return RewardResult((rating + covered / n_items) / 2, details)
        return RewardResult(rating, details)
