"""Rewards of a finished trajectory: each a pure function into [0, 1], and their weighted total.

- :mod:`~visioncreator.rl.rewards.base`: what every reward takes and gives (:class:`RewardContext`,
  :class:`RewardResult`, :data:`RewardFn`);
- :mod:`~visioncreator.rl.rewards.process`: format, tool, plan and reflection rewards;
- :mod:`~visioncreator.rl.rewards.judgements`: which images needed judging and the verdict bound to
  each (:class:`Judgement`, :func:`judgements`), read by the reflection and format rewards and by credit;
- :mod:`~visioncreator.rl.rewards.outcome`: result and outcome rewards;
- :mod:`~visioncreator.rl.rewards.scoring`: every reward by name (:data:`REWARDS`), their weights
  and :func:`score`;
- :mod:`~visioncreator.rl.rewards.judge`: :class:`PlanJudge`, the plan reward asked of an LLM judge.
"""

from visioncreator.rl.rewards.base import RewardContext, RewardFn, RewardResult
from visioncreator.rl.rewards.judge import PlanJudge
from visioncreator.rl.rewards.judgements import Judgement, judgements
from visioncreator.rl.rewards.outcome import outcome_reward, result_reward
from visioncreator.rl.rewards.process import format_reward, plan_reward, reflection_reward, tool_reward
from visioncreator.rl.rewards.scoring import REWARDS, Rewards, RewardWeights, score

__all__ = [
    "REWARDS",
    "Judgement",
    "PlanJudge",
    "RewardContext",
    "RewardFn",
    "RewardResult",
    "RewardWeights",
    "Rewards",
    "format_reward",
    "judgements",
    "outcome_reward",
    "plan_reward",
    "reflection_reward",
    "result_reward",
    "score",
    "tool_reward",
]
