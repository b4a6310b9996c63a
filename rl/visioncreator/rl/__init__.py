"""visioncreator.rl: collect trajectories by replaying the graph, reward them, train with TRL (RPCO).

- :func:`collect` / :func:`collect_to`: tasks x group size through the compiled graph, concurrently
  (Ray workers with ``visioncreator.rl.collection.ray``), as :class:`TrajectoryRecord` JSONL lines;
  the ``visioncreator.rl.collection`` subpackage (the collector, records, Ray) and ``visioncreator collect``;
- rewards (:data:`REWARDS`, :func:`score`; the ``visioncreator.rl.rewards`` subpackage), GRPO
  advantages (:func:`group_advantages`, :func:`per_token_advantages`, and
  :func:`credited_advantages`: image calls and reflect turns credited by the ground truth), token
  samples with masks and segment owners (:func:`token_sample`, :func:`with_segments`);
- exports for TRL (``visioncreator.rl.exports``) and the ``visioncreator.rl.train`` subpackage:
  the trainers (``train_sft``, ``train_grpo``), the RPCO recipe (``visioncreator.rl.train.recipe``)
  and ``visioncreator train sft|grpo|rpco --config FILE``.

Importing this package loads no torch, transformers, TRL, datasets or Ray: those load in the
functions that need them.
"""

from visioncreator.rl.advantages import (
    AdvantageError,
    GroupAdvantages,
    GroupReport,
    group_advantages,
    group_report,
    per_token_advantages,
)
from visioncreator.rl.collection.collector import CollectError, Collector
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.records import (
    CollectTask,
    RecordsError,
    TrajectoryRecord,
    append_record,
    read_records,
    records_dataset,
)
from visioncreator.rl.collection.run import collect, collect_to
from visioncreator.rl.credit import credited_advantages, with_segments
from visioncreator.rl.errors import RLError
from visioncreator.rl.exports import ExportError, grpo_dataset, sft_conversation, sft_dataset
from visioncreator.rl.rewards.base import RewardContext, RewardFn, RewardResult
from visioncreator.rl.rewards.outcome import outcome_reward, result_reward
from visioncreator.rl.rewards.process import format_reward, plan_reward, reflection_reward, tool_reward
from visioncreator.rl.rewards.scoring import REWARDS, Rewards, RewardWeights, score
from visioncreator.rl.samples import SampleError, TokenSample, sft_token_sample, token_sample

__all__ = [
    "REWARDS",
    "AdvantageError",
    "CollectConfig",
    "CollectError",
    "CollectTask",
    "Collector",
    "ExportError",
    "GroupAdvantages",
    "GroupReport",
    "RLError",
    "RecordsError",
    "RewardContext",
    "RewardFn",
    "RewardResult",
    "RewardWeights",
    "Rewards",
    "SampleError",
    "TokenSample",
    "TrajectoryRecord",
    "append_record",
    "collect",
    "collect_to",
    "credited_advantages",
    "format_reward",
    "group_advantages",
    "group_report",
    "grpo_dataset",
    "outcome_reward",
    "per_token_advantages",
    "plan_reward",
    "read_records",
    "records_dataset",
    "reflection_reward",
    "result_reward",
    "score",
    "sft_conversation",
    "sft_dataset",
    "sft_token_sample",
    "token_sample",
    "tool_reward",
    "with_segments",
]
