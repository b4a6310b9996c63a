"""Exports: trajectories as SFT conversations, pre-tokenized SFT data and GRPO samples (Hugging Face datasets).

- :func:`sft_conversation`: TRL's conversational format (``{"messages": [...]}``), rendered by our
  chat template exactly as the transformers policy renders its prompts (node instructions kept).
- :func:`sft_dataset`: conversations, or, with a tokenizer, pre-tokenized rows (``input_ids`` and
  ``assistant_masks``: in TRL 1.16 ``SFTTrainer`` turns ``assistant_masks`` into labels
  unconditionally, while a ``completion_mask`` column counts only with ``completion_only_loss=True``).
- Reflect turns a person reviewed (``AgentConfig.review``) are labelled with the reviewer's verdicts:
  the conversation holds the reviewed turn (``labels="review"``, the default); ``labels="policy"``
  exports what the policy wrote instead.
- :func:`grpo_dataset`: one row per trajectory of each group: the recorded ids, the loss mask, the
  sampling log-probabilities, per-token advantages (optionally per node), rewards.

``datasets`` is imported only when a dataset is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from visioncreator.graph import Trajectory
from visioncreator.policy import Message, chat_messages
from visioncreator.rl.advantages import (
    AdvantageError,
    as_weights,
    group_advantages,
    per_token_advantages,
    weighted_total,
)
from visioncreator.rl.errors import RLError
from visioncreator.rl.samples import SampleError, sft_token_sample, token_sample

__all__ = ["ExportError", "group_trajectories", "grpo_dataset", "grpo_rows", "sft_conversation", "sft_dataset"]


class ExportError(RLError, ValueError):
    """Trajectories that cannot be exported (no assistant turn, no rewards, no group)."""


Labels = Literal["review", "policy"]
"""Whose verdicts label a reviewed reflect turn: the reviewer's (``review``) or the policy's own."""


def _image_mode(trajectory: Trajectory) -> bool:
    return str(trajectory.config.get("observe", "inspect")) in ("image", "both")


def _labelled(trajectory: Trajectory, labels: Labels) -> Trajectory:
    """The trajectory with its reviewed turns labelled by ``labels``.

    The conversation holds each reviewed turn as the reviewer left it; the k-th assistant message is
    the k-th turn, whose record keeps what the policy wrote.
    """
    if labels not in ("review", "policy"):
        raise ExportError(f"labels must be 'review' or 'policy', got {labels!r}")
    if labels == "review" or not any(t.review for t in trajectory.turns):
        return trajectory
    turns = iter(trajectory.turns)
    messages: list[Message] = []
    for m in trajectory.messages:
        turn = next(turns, None) if m.role == "assistant" else None
        messages.append(m.model_copy(update={"content": turn.text}) if turn is not None and turn.review else m)
    return trajectory.model_copy(update={"messages": messages})


def sft_conversation(
    trajectory: Trajectory, *, images: bool | None = None, instructions: bool = True, labels: Labels = "review"
) -> dict[str, list[dict[str, Any]]]:
    """A trajectory as one TRL conversation, up to its last assistant turn.

    Args:
        trajectory: A finished trajectory with at least one assistant message.
        images: Put each message's image handles into its content as ``{"type": "image", "image":
            handle}`` parts (after a ``text`` part). Default: when the run showed images
            (``config["observe"]`` is ``image`` or ``both``). Resolve the handles to images before
            a vision-language trainer reads them; our chat template renders text parts only.
        instructions: Keep the node instructions as ``user`` messages before each assistant turn
            (the transformers policy's ``node_instructions``), so training renders as inference.
        labels: For reflect turns a person reviewed: ``review`` (default) keeps the reviewer's
            verdicts, ``policy`` puts back what the policy wrote.

    Returns:
        ``{"messages": [{"role", "content"}, ...]}`` with roles system/user/assistant/tool.

    Raises:
        ExportError: The trajectory has no assistant message.

    """
    messages = _labelled(trajectory, labels).messages
    last = max((j for j, m in enumerate(messages) if m.role == "assistant"), default=None)
    if last is None:
        raise ExportError(f"trajectory {trajectory.thread_id!r} has no assistant message")
    kept = messages[: last + 1]
    chat = chat_messages(kept, None, instructions=instructions)
    if images if images is not None else _image_mode(trajectory):
        # chat_messages inserts one instruction entry before each assistant message with a node.
        position = 0
        for m in kept:
            if instructions and m.role == "assistant" and m.node is not None:
                position += 1
            entry = chat[position]
            entry["content"] = [
                {"type": "text", "text": entry["content"]},
                *({"type": "image", "image": h} for h in m.images),
            ]
            position += 1
        for entry in chat:  # the instructions: text only
            if isinstance(entry["content"], str):
                entry["content"] = [{"type": "text", "text": entry["content"]}]
    return {"messages": chat}


def sft_dataset(
    trajectories: Iterable[Trajectory],
    tokenizer: Any = None,
    *,
    max_length: int | None = None,
    instructions: bool = True,
    labels: Labels = "review",
) -> Any:
    """An SFT dataset for TRL's ``SFTTrainer``.

    Args:
        trajectories: Trajectories to learn from (the expert's, or selected rollouts).
        tokenizer: With one, rows are pre-tokenized with :func:`~visioncreator.rl.samples.sft_token_sample`:
            ``input_ids`` and ``assistant_masks`` (1 on assistant content and its end-of-turn token).
            Without, rows are conversations (``messages``) for TRL to render and tokenize.
        max_length: Cut pre-tokenized rows to this many tokens.
        instructions: Keep the node instructions (see :func:`sft_conversation`).
        labels: Whose verdicts label a reviewed reflect turn (see :func:`sft_conversation`).

    Raises:
        ExportError: No trajectory, or one without an assistant message.

    """
    from datasets import Dataset  # type: ignore[import-untyped,unused-ignore]

    items = list(trajectories)
    if not items:
        raise ExportError("no trajectories to export")
    if tokenizer is None:
        images = any(_image_mode(t) for t in items)  # one content shape for the whole column
        return Dataset.from_list(
            [sft_conversation(t, images=images, instructions=instructions, labels=labels) for t in items]
        )
    rows = []
    for t in items:
        try:
            sample = sft_token_sample(_labelled(t, labels), tokenizer, max_length, instructions=instructions)
        except SampleError as exc:
            raise ExportError(f"trajectory {t.thread_id!r}: {exc}") from exc
        rows.append(
            {
                "input_ids": list(sample.input_ids),
                "assistant_masks": [0] * len(sample.prompt_ids) + list(sample.env_mask),
            }
        )
    return Dataset.from_list(rows)


def group_trajectories(records: Iterable[Trajectory]) -> dict[str, list[Trajectory]]:
    """Records by their ``group_id`` (as :class:`~visioncreator.rl.collection.records.TrajectoryRecord` has), in order.

    Raises:
        ExportError: A record has no ``group_id``.

    """
    groups: dict[str, list[Trajectory]] = {}
    for r in records:
        gid = getattr(r, "group_id", None)
        if not gid:
            raise ExportError(f"trajectory {r.thread_id!r} has no group_id: pass groups as a mapping")
        groups.setdefault(str(gid), []).append(r)
    return groups


def _record_rewards(trajectory: Trajectory) -> Mapping[str, float]:
    rewards = getattr(trajectory, "rewards", None)
    if not rewards:
        raise ExportError(f"trajectory {trajectory.thread_id!r} has no rewards: score it, or pass rewards=")
    return {str(k): float(v) for k, v in rewards.items()}


def grpo_rows(
    groups: Mapping[str, Sequence[Trajectory]] | Iterable[Trajectory],
    *,
    rewards: Callable[[Trajectory], Mapping[str, float]] | None = None,
    weights: Mapping[str, float] | object | None = None,
    node_rewards: Mapping[str, Sequence[str]] | None = None,
    eps: float = 1e-6,
    scale_by_std: bool = True,
) -> list[dict[str, Any]]:
    """The rows of :func:`grpo_dataset`, as plain dicts (same arguments)."""
    from visioncreator.rl.rewards.scoring import RewardWeights

    by_group = dict(groups) if isinstance(groups, Mapping) else group_trajectories(groups)
    reward_of = rewards or _record_rewards
    w = weights if weights is not None else RewardWeights()
    rows: list[dict[str, Any]] = []
    for gid, members in by_group.items():
        if not members:
            raise ExportError(f"group {gid!r} is empty")
        try:
            samples = [token_sample(t) for t in members]
        except SampleError as exc:
            raise ExportError(f"group {gid!r}: {exc}") from exc
        components = [dict(reward_of(t)) for t in members]
        try:
            tokens = per_token_advantages(samples, components, w, node_rewards, eps=eps, scale_by_std=scale_by_std)
            totals = [weighted_total(c, as_weights(w)) for c in components]
        except AdvantageError as exc:
            raise ExportError(f"group {gid!r}: {exc}") from exc
        group = group_advantages(totals, eps=eps, scale_by_std=scale_by_std)
        names = sorted({k for c in components for k in c})
        for i, (t, s) in enumerate(zip(members, samples, strict=True)):
            rows.append(
                {
                    "group_id": gid,
                    "trajectory_id": str(getattr(t, "trajectory_id", "") or t.thread_id),
                    "prompt_ids": list(s.prompt_ids),
                    "completion_ids": list(s.completion_ids),
                    "env_mask": list(s.env_mask),
                    "completion_mask": list(s.env_mask),
                    "logprobs": None if s.logprobs is None else list(s.logprobs),
                    "nodes": list(s.nodes),
                    "turns": list(s.turns),
                    "advantages": tokens[i],
                    "advantage": group.values[i],
                    "reward": totals[i],
                    "rewards": {k: components[i].get(k) for k in names},
                    "degenerate": group.all_equal,
                }
            )
    return rows


def grpo_dataset(
    groups: Mapping[str, Sequence[Trajectory]] | Iterable[Trajectory],
    *,
    rewards: Callable[[Trajectory], Mapping[str, float]] | None = None,
    weights: Mapping[str, float] | object | None = None,
    node_rewards: Mapping[str, Sequence[str]] | None = None,
    eps: float = 1e-6,
    scale_by_std: bool = True,
) -> Any:
    """GRPO samples, one row per trajectory, grouped.

    Columns: ``group_id``, ``trajectory_id``, ``prompt_ids``, ``completion_ids``, ``env_mask`` (TRL's
    ``rollout_func`` name) and ``completion_mask`` (the same loss mask: 1 on policy tokens, 0 on
    tool observations and template tokens), ``logprobs`` (null when not recorded), ``nodes``,
    ``turns``, ``advantages`` (per completion token, 0 on environment tokens), ``advantage`` (the
    sample's group advantage of the weighted total), ``reward`` (that total), ``rewards`` (by
    name) and ``degenerate`` (the group's totals are all equal).

    Args:
        groups: Group id -> its trajectories, or records with a ``group_id`` (grouped in order).
        rewards: Rewards of a trajectory by name; default its ``rewards`` field (a scored
            :class:`~visioncreator.rl.collection.records.TrajectoryRecord`).
        weights: Reward weights of the total (mapping or ``RewardWeights``); default ``RewardWeights()``.
        node_rewards: Per-node credit, see :func:`~visioncreator.rl.advantages.per_token_advantages`.
        eps: See :func:`~visioncreator.rl.advantages.group_advantages`.
        scale_by_std: See :func:`~visioncreator.rl.advantages.group_advantages`.

    Raises:
        ExportError: An empty group, a trajectory without token ids or rewards, a missing reward.

    """
    from datasets import Dataset  # type: ignore[import-untyped,unused-ignore]

    rows = grpo_rows(
        groups, rewards=rewards, weights=weights, node_rewards=node_rewards, eps=eps, scale_by_std=scale_by_std
    )
    if not rows:
        raise ExportError("no groups to export")
    return Dataset.from_list(rows)
