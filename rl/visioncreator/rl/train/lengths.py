"""How long trajectories are in tokens, the limits derived from that, and refusing what does not fit.

A stage that cuts a trajectory trains on its head while its reward (which saw the whole of it)
still counts: the policy is credited or blamed for tokens it never sees in the loss. So limits
come from the data, and whatever is longer is refused, never cut:

- :func:`trajectory_lengths` tokenizes trajectories exactly as SFT does
  (:func:`~visioncreator.rl.samples.sft_token_sample`, the rendering the local policy uses) and
  reports their lengths; :func:`expert_lengths` does it for the scripted expert's trajectories on
  a :class:`~visioncreator.rl.train.config.TaskSource` (the same collection SFT uses).
- :func:`derive_max_completion_length` turns a report into a GRPO limit: the longest expert
  completion times :data:`HEADROOM` (a sampled policy writes more than the expert: longer turns,
  extra retries and reflections), rounded up to a multiple of :data:`MULTIPLE`, at most the
  model's context.
  :func:`with_completion_limit` fills a :class:`~visioncreator.rl.train.config.GRPOStage` whose
  ``max_completion_length`` is ``None`` that way.
- :func:`fits` and :func:`refuse` are for the GRPO rollout: a rollout longer than the limit is
  kept in its group (TRL needs ``num_generations`` samples per group) but refused: cut to the
  limit with every token masked out, so it contributes no loss. :func:`refuse_overlong` does it
  for a batch and counts.

Importing this module stays light; the expert collection imports the graph lazily.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visioncreator.graph import Trajectory
from visioncreator.rl.samples import TokenSample, sft_token_sample
from visioncreator.rl.train.config import GRPOStage, TaskSource

__all__ = [
    "HEADROOM",
    "MULTIPLE",
    "SAMPLES",
    "LengthReport",
    "context_length",
    "derive_max_completion_length",
    "expert_lengths",
    "expert_trajectories",
    "fits",
    "refuse",
    "refuse_overlong",
    "round_up",
    "trajectory_lengths",
    "with_completion_limit",
]

HEADROOM = 1.25
"""Factor over the longest expert completion in a derived GRPO limit. The expert's trajectories are
the shortest successful ones; a sampled policy writes longer turns and retries more. A quarter more
covers one extra reflect-and-retry round of a multi-image task (about 300-500 tokens) with room to
spare, and keeps the batch's memory bounded (every sequence may reach the limit)."""

MULTIPLE = 64
"""Derived limits are rounded up to a multiple of this (friendly to kernels and memory allocators)."""

SAMPLES = 4
"""Expert samples per task when deriving a GRPO limit: each meets other faults (one sample per task
missed the longest multi-image trajectories of other seeds)."""


@dataclass(frozen=True)
class LengthReport:
    """Token lengths of some trajectories, each as one training sequence."""

    task_ids: tuple[str, ...]
    """The task of each trajectory."""
    prompt: tuple[int, ...]
    """Tokens of what the first policy turn saw."""
    completion: tuple[int, ...]
    """Tokens after it (policy turns and observations): what ``max_completion_length`` bounds."""

    @property
    def count(self) -> int:
        """How many trajectories."""
        return len(self.completion)

    @property
    def total(self) -> tuple[int, ...]:
        """Prompt plus completion tokens of each trajectory: what SFT's ``max_length`` bounds."""
        return tuple(p + c for p, c in zip(self.prompt, self.completion, strict=True))

    @property
    def median(self) -> float:
        """Median completion length (0 without trajectories)."""
        return float(statistics.median(self.completion)) if self.completion else 0.0

    @property
    def longest(self) -> int:
        """Longest completion (0 without trajectories)."""
        return max(self.completion, default=0)

    @property
    def longest_task(self) -> str | None:
        """The task of the longest completion."""
        return self.task_ids[self.completion.index(self.longest)] if self.completion else None

    def over(self, max_completion_length: int) -> int:
        """How many completions are longer than ``max_completion_length`` (would be cut)."""
        return sum(c > max_completion_length for c in self.completion)


def trajectory_lengths(
    trajectories: Iterable[Trajectory], tokenizer: Any, *, instructions: bool = True
) -> LengthReport:
    """The token lengths of ``trajectories`` rendered as SFT renders them (nothing cut).

    Raises:
        SampleError: A trajectory has no assistant message, or the template is not prefix-preserving.

    """
    ids: list[str] = []
    prompt: list[int] = []
    completion: list[int] = []
    for trajectory in trajectories:
        sample = sft_token_sample(trajectory, tokenizer, instructions=instructions)
        ids.append(trajectory.task.id or trajectory.thread_id)
        prompt.append(len(sample.prompt_ids))
        completion.append(len(sample.completion_ids))
    return LengthReport(task_ids=tuple(ids), prompt=tuple(prompt), completion=tuple(completion))


async def expert_trajectories(
    source: TaskSource,
    *,
    seed: int = 0,
    group_size: int = 1,
    max_turns: int | None = None,
    expert: Mapping[str, Any] | None = None,
    store: Path,
) -> list[Trajectory]:
    """The scripted expert's trajectories on ``source``'s tasks, on the synthetic tool server, as SFT collects them.

    Args:
        source: The tasks (suite, splits, ids, exclusions, limit, fault rate).
        seed: Collection seed (which faults are injected).
        group_size: Expert samples per task.
        max_turns: Policy turns per trajectory (None: the collector's default).
        expert: ``ExpertConfig`` fields (None: the faultless expert).
        store: Where the tools write images.

    """
    from visioncreator.graph import expert_policy
    from visioncreator.policy import ExpertConfig
    from visioncreator.rl.collection.collector import synthetic_tools
    from visioncreator.rl.collection.config import CollectConfig
    from visioncreator.rl.collection.run import collect
    from visioncreator.rl.train.tasks import load_tasks

    turns = {} if max_turns is None else {"max_turns": max_turns}
    config = CollectConfig(group_size=group_size, seed=seed, fault_rate=source.fault_rate, store=store, **turns)
    async with synthetic_tools(config) as tools:
        records = await collect(
            load_tasks(source), policy=expert_policy(ExpertConfig(**dict(expert or {}))), tools=tools, config=config
        )
    return list(records)


def expert_lengths(
    source: TaskSource,
    tokenizer: Any,
    *,
    seed: int = 0,
    group_size: int = 1,
    max_turns: int | None = None,
    expert: Mapping[str, Any] | None = None,
) -> LengthReport:
    """:func:`trajectory_lengths` of :func:`expert_trajectories` (collected into a temporary store)."""
    with tempfile.TemporaryDirectory(prefix="vc-lengths-") as store:
        trajectories = asyncio.run(
            expert_trajectories(
                source, seed=seed, group_size=group_size, max_turns=max_turns, expert=expert, store=Path(store)
            )
        )
    return trajectory_lengths(trajectories, tokenizer)


def round_up(n: int, multiple: int = MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (at least one ``multiple``)."""
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    return max(multiple, math.ceil(n / multiple) * multiple)


def context_length(tokenizer: Any) -> int | None:
    """The model's context (``tokenizer.model_max_length``), or None when the tokenizer does not know it."""
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < 1_000_000 else None


def derive_max_completion_length(
    report: LengthReport, *, headroom: float = HEADROOM, multiple: int = MULTIPLE, context: int | None = None
) -> int:
    """A GRPO ``max_completion_length`` that holds every trajectory of ``report`` with ``headroom`` to spare.

    ``round_up(ceil(report.longest * headroom), multiple)``, at most ``context`` (the model's
    context length: the policy cannot write past it, so a longer limit only costs memory).

    Raises:
        ValueError: The report is empty, or ``headroom`` is below 1 (the limit would cut the expert).

    """
    if not report.count:
        raise ValueError("cannot derive max_completion_length from no trajectories")
    if headroom < 1.0:
        raise ValueError(f"headroom must be at least 1.0 (the expert must fit), got {headroom}")
    limit = round_up(math.ceil(report.longest * headroom), multiple)
    return limit if context is None else min(limit, context)


def with_completion_limit(
    stage: GRPOStage, tokenizer: Any, *, seed: int = 0, headroom: float = HEADROOM, samples: int = SAMPLES
) -> tuple[GRPOStage, LengthReport | None]:
    """``stage`` with ``max_completion_length`` set: as given, else derived from the expert on its tasks.

    The expert runs every task of ``stage.tasks``' suite and splits (its ``ids`` and ``limit`` aside,
    its held-out exclusions kept) ``samples`` times (the stage's fault rate,
    ``seed``, the stage's ``max_turns``); its trajectories are measured with ``tokenizer``
    (:func:`expert_lengths`) and the limit is :func:`derive_max_completion_length`, capped at the
    tokenizer's :func:`context_length`.

    Returns:
        The stage with a limit, and the report it was derived from (None when the stage set one).

    """
    if stage.max_completion_length is not None:
        return stage, None
    # Every task of the stage's splits, not only its ids/limit: the long tail comes from faults,
    # which any task can meet, and a few tasks' samples miss it.
    source = stage.tasks.model_copy(update={"ids": (), "limit": None})
    report = expert_lengths(source, tokenizer, seed=seed, group_size=samples, max_turns=stage.max_turns)
    limit = derive_max_completion_length(report, headroom=headroom, context=context_length(tokenizer))
    return stage.model_copy(update={"max_completion_length": limit}), report


def fits(sample: TokenSample, max_completion_length: int) -> bool:
    """Whether ``sample``'s completion is at most ``max_completion_length`` tokens (nothing would be cut)."""
    return len(sample.completion_ids) <= max_completion_length


def refuse(sample: TokenSample, max_completion_length: int) -> TokenSample:
    """An over-long sample made harmless: cut to the limit, every token masked out (no loss, no credit).

    It keeps its place in its GRPO group (TRL needs ``num_generations`` samples a group); with an
    all-zero ``env_mask`` none of its tokens enters the loss.
    """
    cut = sample.head(max_completion_length)
    return TokenSample(
        prompt_ids=cut.prompt_ids,
        completion_ids=cut.completion_ids,
        env_mask=(0,) * len(cut.completion_ids),
        logprobs=cut.logprobs,
        nodes=cut.nodes,
        turns=cut.turns,
        segments=cut.segments,
    )


def refuse_overlong(samples: Sequence[TokenSample], max_completion_length: int) -> tuple[list[TokenSample], int]:
    """The samples, each over-long one replaced by :func:`refuse` of it; and how many were refused."""
    out = [s if fits(s, max_completion_length) else refuse(s, max_completion_length) for s in samples]
    return out, sum(not fits(s, max_completion_length) for s in samples)
