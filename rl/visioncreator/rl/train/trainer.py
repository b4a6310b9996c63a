"""``GraphGRPOTrainer``: the one GRPO trainer of the project, TRL's ``GRPOTrainer`` fed by the graph.

One class does what GRPO on our agent needs, each part a thin layer around TRL's own code:

- **graph replay**: generation is a :class:`~visioncreator.rl.train.rollout.GraphRollout` (TRL's
  ``rollout_func``), so the loss sees exactly the recorded token ids and masks;
- **degenerate groups**: after TRL has scored a batch, ``groups/degenerate`` (groups whose
  weighted rewards are all equal: zero advantage, no signal) and ``groups/total`` are logged;
- **per-node advantages**: with ``per_node_advantages``, the per-sample advantages (shape
  ``(B,)``) become per-token ones (``(B, T)``, which TRL 1.16's ``_compute_loss`` accepts) from
  :func:`visioncreator.rl.advantages.per_token_advantages`: the tokens of a node named in
  ``node_rewards`` get the group-normalised advantage of its rewards (plan tokens the plan
  reward's), other policy tokens the total's, environment tokens 0;
- **mid-trajectory images**: it inherits
  :class:`~visioncreator.rl.train.vlm.TrajectoryImagesGRPOTrainer`, so the images a VLM policy saw
  during a rollout (``trajectory_images``) reach the old, reference and current log-probabilities.
  A rollout that returns no such key (every text policy) leaves TRL's behaviour unchanged;
- **inspection**: ``on_batch`` gets every scored batch TRL is about to train on, with the
  rollouts behind it.

Imports TRL at module level: only heavy code paths (``train_grpo``, tests) import this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from visioncreator.rl.train.rollout import GraphRollout, RolloutSample
from visioncreator.rl.train.vlm import TrajectoryImagesGRPOTrainer

__all__ = ["GraphGRPOTrainer", "OnBatch"]

OnBatch = Callable[[Mapping[str, Any]], None]
"""Called with each scored batch: TRL's keys (``prompt_ids``, ``completion_ids``, ``tool_mask``,
``advantages``, ...) plus ``rollouts``, the :class:`~visioncreator.rl.train.rollout.RolloutSample` list."""


class GraphGRPOTrainer(TrajectoryImagesGRPOTrainer):
    """TRL's ``GRPOTrainer`` whose generation replays the graph (see the module docstring).

    Args:
        *args: ``GRPOTrainer``'s positional arguments.
        rollout: The graph rollout; it is also passed to TRL as ``rollout_func``.
        per_node_advantages: Put per-token, per-node advantages in place of the per-sample ones.
        node_rewards: Node -> the rewards that credit its tokens (see
            :func:`~visioncreator.rl.advantages.per_token_advantages`); empty: every policy token
            gets the total's advantage.
        reward_weights: Reward name -> weight of the total; default the rollout stage's.
        on_batch: Called with every scored training batch (see :data:`OnBatch`).
        **kwargs: ``GRPOTrainer``'s keyword arguments, without ``rollout_func``.

    """

    def __init__(
        self,
        *args: Any,
        rollout: GraphRollout,
        per_node_advantages: bool = False,
        node_rewards: Mapping[str, Sequence[str]] | None = None,
        reward_weights: Mapping[str, float] | None = None,
        on_batch: OnBatch | None = None,
        **kwargs: Any,
    ) -> None:
        if "rollout_func" in kwargs:
            raise TypeError("GraphGRPOTrainer takes `rollout=` (a GraphRollout), not `rollout_func=`")
        super().__init__(*args, rollout_func=rollout, **kwargs)  # type: ignore[misc]  # refused above
        self.graph_rollout = rollout
        self.per_node_advantages = per_node_advantages
        self.node_rewards = {node: list(names) for node, names in (node_rewards or {}).items()}
        self.graph_reward_weights = dict(reward_weights or rollout.stage.rewards)
        self.on_batch = on_batch

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        degenerate_before, groups_before = self.graph_rollout.degenerate_groups, self.graph_rollout.groups
        output = super()._generate_and_score_completions(inputs)
        batch = self.graph_rollout.last
        mode = "train" if self.model is not None and self.model.training else "eval"
        self._metrics[mode]["groups/degenerate"].append(float(self.graph_rollout.degenerate_groups - degenerate_before))
        self._metrics[mode]["groups/total"].append(float(self.graph_rollout.groups - groups_before))
        if self.per_node_advantages and mode == "train":
            completion_ids = output["completion_ids"]
            output["advantages"] = self._per_token(batch, completion_ids.shape[1]).to(completion_ids.device)
        if self.on_batch is not None:
            self.on_batch({**output, "rollouts": list(batch)})
        return output

    def _per_token(self, batch: Sequence[RolloutSample], width: int) -> torch.Tensor:
        """Per-token advantages of the batch, group by group, zero-padded to the completion width."""
        from visioncreator.rl.advantages import per_token_advantages

        rows: list[list[float]] = [[] for _ in batch]
        for group in sorted({b.group for b in batch}):
            members = [i for i, b in enumerate(batch) if b.group == group]
            advantages = per_token_advantages(
                [batch[i].sample for i in members],
                [dict(batch[i].rewards) for i in members],
                self.graph_reward_weights,
                self.node_rewards,
            )
            for i, row in zip(members, advantages, strict=True):
                rows[i] = row
        values = torch.zeros(len(rows), width, dtype=torch.float32)
        for i, row in enumerate(rows):
            values[i, : min(len(row), width)] = torch.tensor(row[:width], dtype=torch.float32)
        return values
