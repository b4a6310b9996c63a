"""``GraphGRPOTrainer``: the one GRPO trainer of the project, TRL's ``GRPOTrainer`` fed by the graph.

One class does what GRPO on our agent needs, each part a thin layer around TRL's own code:

- **graph replay**: generation is a :class:`~visioncreator.rl.train.rollout.GraphRollout` (TRL's
  ``rollout_func``), so the loss sees exactly the recorded token ids and masks;
- **refused rollouts**: ``rollouts/refused_too_long`` counts rollouts over ``max_completion_length``
  (masked out, never cut; see :class:`~visioncreator.rl.train.rollout.GraphRollout`);
- **degenerate groups**: after TRL has scored a batch, ``groups/degenerate`` (groups whose
  weighted rewards are all equal: zero advantage, no signal) and ``groups/total`` are logged;
- **credit**: TRL gives every token of a sample its advantage (``credit="sample"``). With
  ``credit="per_node"`` (or ``per_node_advantages``), the per-sample advantages (shape ``(B,)``)
  become per-token ones (``(B, T)``, which TRL 1.16's ``_compute_loss`` accepts) from
  :func:`visioncreator.rl.advantages.per_token_advantages`: the tokens of a node named in
  ``node_rewards`` get the group-normalised advantage of its rewards (plan tokens the plan
  reward's), other policy tokens the total's, environment tokens 0. ``credit="per_turn"`` also
  credits each image call's tokens by the image it makes and each reflect turn by its own verdicts
  (:func:`visioncreator.rl.credit.credited_advantages`; the segment of each token comes from the
  trainer's tokenizer, :func:`visioncreator.rl.credit.with_segments`);
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
from contextlib import AbstractContextManager
from typing import Any, Literal, get_args

import torch

from visioncreator.rl.train.rollout import GraphRollout, RolloutSample
from visioncreator.rl.train.vlm import TrajectoryImagesGRPOTrainer

__all__ = ["Credit", "GraphGRPOTrainer", "OnBatch"]

Credit = Literal["sample", "per_node", "per_turn"]
"""How advantages reach tokens: one per sample (TRL's), per node, or per image call and reflect turn."""

OnBatch = Callable[[Mapping[str, Any]], None]
"""Called with each scored batch: TRL's keys (``prompt_ids``, ``completion_ids``, ``tool_mask``,
``advantages``, ...) plus ``rollouts``, the :class:`~visioncreator.rl.train.rollout.RolloutSample` list."""


class GraphGRPOTrainer(TrajectoryImagesGRPOTrainer):
    """TRL's ``GRPOTrainer`` whose generation replays the graph (see the module docstring).

    Args:
        *args: ``GRPOTrainer``'s positional arguments.
        rollout: The graph rollout; it is also passed to TRL as ``rollout_func``.
        per_node_advantages: Put per-token, per-node advantages in place of the per-sample ones
            (``credit="per_node"``); ignored when ``credit`` is given.
        node_rewards: Node -> the rewards that credit its tokens (see
            :func:`~visioncreator.rl.advantages.per_token_advantages`); empty: every policy token
            gets the total's advantage.
        reward_weights: Reward name -> weight of the total; default the rollout stage's.
        credit: ``"sample"``, ``"per_node"`` or ``"per_turn"`` (see the module docstring); default
            ``"per_node"`` with ``per_node_advantages``, else ``"sample"``.
        credit_local_weight: With ``"per_turn"``: the share of an image call's or reflect turn's
            own normalised score in its tokens' advantage (``local_weight`` of
            :func:`~visioncreator.rl.credit.credited_advantages`).
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
        credit: Credit | None = None,
        credit_local_weight: float = 0.5,
        on_batch: OnBatch | None = None,
        **kwargs: Any,
    ) -> None:
        if "rollout_func" in kwargs:
            raise TypeError("GraphGRPOTrainer takes `rollout=` (a GraphRollout), not `rollout_func=`")
        if credit is not None and credit not in get_args(Credit):
            raise ValueError(f"credit must be one of {list(get_args(Credit))}, got {credit!r}")
        if not 0.0 <= credit_local_weight <= 1.0:
            raise ValueError(f"credit_local_weight must be in [0, 1], got {credit_local_weight}")
        super().__init__(*args, rollout_func=rollout, **kwargs)  # type: ignore[misc]  # refused above
        self.graph_rollout = rollout
        self.credit: Credit = credit or ("per_node" if per_node_advantages else "sample")
        self.credit_local_weight = credit_local_weight
        self.node_rewards = {node: list(names) for node, names in (node_rewards or {}).items()}
        self.graph_reward_weights = dict(reward_weights or rollout.stage.rewards)
        self.on_batch = on_batch
        self.served_session: AbstractContextManager[Any] | None = None
        """With served rollouts: the session whose server the rollouts use (entered around training)."""

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        rollout = self.graph_rollout
        degenerate_before, groups_before = rollout.degenerate_groups, rollout.groups
        refused_before = rollout.refused_too_long
        output = super()._generate_and_score_completions(inputs)
        batch = self.graph_rollout.last
        mode = "train" if self.model is not None and self.model.training else "eval"
        self._metrics[mode]["groups/degenerate"].append(float(self.graph_rollout.degenerate_groups - degenerate_before))
        self._metrics[mode]["groups/total"].append(float(self.graph_rollout.groups - groups_before))
        self._metrics[mode]["rollouts/refused_too_long"].append(float(rollout.refused_too_long - refused_before))
        if self.credit != "sample" and mode == "train":
            completion_ids = output["completion_ids"]
            output["advantages"] = self._per_token(batch, completion_ids.shape[1]).to(completion_ids.device)
        if self.on_batch is not None:
            self.on_batch({**output, "rollouts": list(batch)})
        return output

    @property
    def per_node_advantages(self) -> bool:
        """Whether advantages are per token (any ``credit`` but ``"sample"``)."""
        return self.credit != "sample"

    def _per_token(self, batch: Sequence[RolloutSample], width: int) -> torch.Tensor:
        """Per-token advantages of the batch, group by group, zero-padded to the completion width."""
        rows: list[list[float]] = [[] for _ in batch]
        for group in sorted({b.group for b in batch}):
            members = [i for i, b in enumerate(batch) if b.group == group]
            for i, row in zip(members, self._group_rows([batch[i] for i in members]), strict=True):
                rows[i] = row
        values = torch.zeros(len(rows), width, dtype=torch.float32)
        for i, row in enumerate(rows):
            values[i, : min(len(row), width)] = torch.tensor(row[:width], dtype=torch.float32)
        return values

    def _group_rows(self, group: Sequence[RolloutSample]) -> list[list[float]]:
        """The per-token advantages of one group's rollouts, by the trainer's ``credit``."""
        from visioncreator.rl.advantages import per_token_advantages
        from visioncreator.rl.credit import credited_advantages, with_segments

        rewards = [dict(b.rewards) for b in group]
        if self.credit == "per_node":
            return per_token_advantages(
                [b.sample for b in group], rewards, self.graph_reward_weights, self.node_rewards
            )
        tokenizer = _text_tokenizer(self.processing_class)
        samples = [b.sample if b.sample.segments else with_segments(b.sample, b.record, tokenizer) for b in group]
        return credited_advantages(
            samples,
            [b.record for b in group],
            rewards,
            self.graph_reward_weights,
            self.node_rewards,
            local_weight=self.credit_local_weight,
        )


def _text_tokenizer(processing_class: Any) -> Any:
    """The tokenizer inside a VLM processor (the policy's ids are text ids); a tokenizer itself."""
    if hasattr(processing_class, "image_processor") and hasattr(processing_class, "tokenizer"):
        return processing_class.tokenizer
    return processing_class
