"""visioncreator.rl: rewards of finished trajectories (and, later, the RL trainers)."""

from visioncreator.rl.rewards import REWARDS, RewardFn, Rewards, RewardWeights, outcome_reward, result_reward, score
from visioncreator.rl.rewards_base import RewardContext, RewardResult
from visioncreator.rl.rewards_process import format_reward, plan_reward, reflection_reward, tool_reward

__all__ = [
    "REWARDS",
    "RewardContext",
    "RewardFn",
    "RewardResult",
    "RewardWeights",
    "Rewards",
    "format_reward",
    "outcome_reward",
    "plan_reward",
    "reflection_reward",
    "result_reward",
    "score",
    "tool_reward",
]
