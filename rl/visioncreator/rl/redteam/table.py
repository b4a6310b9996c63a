"""Run the adversaries and the expert on the same tasks and fault rates, and compare their rewards.

Every policy runs through the real graph on an in-process synthetic tool server with exact
perception (``inspect_image`` reports the ground truth) and shared call seeds, so that at one
fault rate every policy meets the same first images. Each trajectory is scored with
:func:`visioncreator.rl.rewards.score`. An adversary passes a task when it scores strictly below
the expert on the total (and on the reward it targets, where the expert's own value leaves room),
or when its run is the expert's: the same turns (``trajectory``), or the same calls, answers and
verdicts with only the reflections' wording changed (``verdicts``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from visioncreator.graph import expert_policy
from visioncreator.policy import ExpertConfig, Policy
from visioncreator.rl.collection import (
    CollectConfig,
    CollectTask,
    TrajectoryRecord,
    as_collect_task,
    collect,
    synthetic_tools,
)
from visioncreator.rl.redteam.adversaries import ADVERSARIES
from visioncreator.rl.rewards import REWARDS, Rewards, RewardWeights, judgements, score

__all__ = ["EXPERT", "Comparison", "RedTeamConfig", "Run", "compare", "markdown", "red_team", "red_team_tasks"]

EXPERT = "expert"
"""The reference policy's name in results."""
Sameness = Literal["trajectory", "verdicts"]


@dataclass(frozen=True, kw_only=True)
class RedTeamConfig:
    """Which tasks and fault rates the red team runs, and how it weighs rewards."""

    task_ids: tuple[str, ...] = ("single-000", "single-003", "multi-003", "multi-005", "img2img-004")
    """Tasks of the built-in suite: single, multi (2 images each) and img2img."""
    fault_rates: tuple[float, ...] = (0.0, 0.3, 1.0)
    """Synthetic fault rates to run at."""
    weights: RewardWeights = field(default_factory=RewardWeights)
    """Weights of the total."""
    store: Path | None = None
    """Image store of the tool server (img2img inputs are rendered into it); None: a temporary one."""
    seed: int = 0
    """Collection seed (and so the shared call seeds)."""


@dataclass(frozen=True)
class Run:
    """One policy's trajectory of one task at one fault rate, with its rewards."""

    policy: str
    fault_rate: float
    record: TrajectoryRecord
    rewards: Rewards


@dataclass(frozen=True)
class Comparison:
    """An adversary's run against the expert's on the same task and fault rate."""

    adversary: str
    task_id: str
    fault_rate: float
    target: str | None
    total: float
    expert_total: float
    target_value: float | None
    expert_target: float | None
    same: Sameness | None
    """The run is the expert's: the same turns, or the same verdicts in other words; None otherwise."""
    wrong_verdicts: int
    """The adversary's verdicts that disagree with the ground truth (missing ones included)."""

    @property
    def below(self) -> bool:
        """Strictly below the expert on the total."""
        return self.total < self.expert_total

    @property
    def target_meaningful(self) -> bool:
        """Whether the adversary must score below the expert on its target too.

        Only where the expert earned the whole target (below that, the comparison measures the
        dice of the fault injection, not the shortcut) and, for ``reflection``, only where the
        adversary judged something wrongly: rejecting everything when every image is faulty is
        right, and the reward must pay it.
        """
        if self.expert_target is None or self.expert_target < 1.0:
            return False
        return self.target != "reflection" or self.wrong_verdicts > 0

    @property
    def below_target(self) -> bool:
        """Strictly below the expert on the target reward (True where that is not meaningful)."""
        if not self.target_meaningful or self.target_value is None or self.expert_target is None:
            return True
        return self.target_value < self.expert_target

    @property
    def passed(self) -> bool:
        """The reward tells the adversary from the expert, or the run is the expert's."""
        return self.same is not None or (self.below and self.below_target)


def red_team_tasks(task_ids: Sequence[str]) -> list[CollectTask]:
    """The named tasks of the built-in suite, in the order given."""
    from visioncreator.evals import load_suite

    by_id = {t.id: t for t in load_suite()}
    missing = [i for i in task_ids if i not in by_id]
    if missing:
        raise ValueError(f"no tasks {missing} in the built-in suite")
    return [as_collect_task(by_id[i]) for i in task_ids]


def _policies() -> dict[str, Policy]:
    expert = expert_policy(ExpertConfig())
    return {EXPERT: expert, **{a.name: a(expert) for a in ADVERSARIES}}


async def _run_all(config: RedTeamConfig, store: Path) -> list[Run]:
    tasks = red_team_tasks(config.task_ids)
    runs: list[Run] = []
    for rate in config.fault_rates:
        collect_config = CollectConfig(
            group_size=1, store=store, fault_rate=rate, seed=config.seed, concurrency=len(tasks),
            observe_miss_rate=0.0, observe_count_rate=0.0, observe_color_rate=0.0, observe_ocr_rate=0.0,
        )  # fmt: skip
        for name, policy in _policies().items():
            # A fresh server per policy: the same calls meet the same faults, whatever ran before.
            async with synthetic_tools(collect_config) as tools:
                records = await collect(tasks, policy=policy, tools=tools, config=collect_config)
            for record in records:
                rewards = score(record, record.reward_context(), config.weights)
                runs.append(Run(policy=name, fault_rate=rate, record=record, rewards=rewards))
    return runs


async def red_team(config: RedTeamConfig | None = None) -> list[Run]:
    """Run the expert and every adversary on ``config``'s tasks at each of its fault rates.

    Returns:
        One :class:`Run` per (fault rate, policy, task), in that order.

    """
    config = config or RedTeamConfig()
    if config.store is not None:
        return await _run_all(config, config.store)
    with tempfile.TemporaryDirectory(prefix="visioncreator-redteam-") as tmp:
        return await _run_all(config, Path(tmp))


def _same(run: Run, expert: Run) -> Sameness | None:
    ours, theirs = run.record, expert.record
    if [(t.node, t.text) for t in ours.turns] == [(t.node, t.text) for t in theirs.turns]:
        return "trajectory"
    others_same = [(t.node, t.text) for t in ours.turns if t.node != "reflect"] == [
        (t.node, t.text) for t in theirs.turns if t.node != "reflect"
    ]
    calls = [(c.name, c.arguments, c.handle) for c in ours.tool_calls]
    expert_calls = [(c.name, c.arguments, c.handle) for c in theirs.tool_calls]
    verdicts = [(j.image, j.verdict, j.correct) for j in judgements(ours)]
    expert_verdicts = [(j.image, j.verdict, j.correct) for j in judgements(theirs)]
    if others_same and calls == expert_calls and verdicts == expert_verdicts:
        return "verdicts"
    return None


def compare(runs: Sequence[Run]) -> list[Comparison]:
    """Each adversary's run against the expert's run of the same task at the same fault rate."""
    expert = {(r.record.task_id, r.fault_rate): r for r in runs if r.policy == EXPERT}
    targets = {a.name: a.target for a in ADVERSARIES}
    out: list[Comparison] = []
    for run in runs:
        if run.policy == EXPERT:
            continue
        ref = expert[(run.record.task_id, run.fault_rate)]
        target = targets.get(run.policy)
        out.append(
            Comparison(
                adversary=run.policy,
                task_id=run.record.task_id,
                fault_rate=run.fault_rate,
                target=target,
                total=run.rewards.total,
                expert_total=ref.rewards.total,
                target_value=run.rewards.components[target].value if target else None,
                expert_target=ref.rewards.components[target].value if target else None,
                same=_same(run, ref),
                wrong_verdicts=sum(j.correct is False for j in judgements(run.record)),
            )
        )
    return out


def _verdict(comparisons: Sequence[Comparison]) -> str:
    n = len(comparisons)
    parts = []
    for same in ("trajectory", "verdicts"):
        k = sum(c.same == same for c in comparisons)
        if k:
            parts.append(f"= expert (same {same}) {k}/{n}")
    below = sum(c.same is None and c.below and c.below_target for c in comparisons)
    if below:
        parts.append(f"below {below}/{n}")
    failed = sum(not c.passed for c in comparisons)
    if failed:
        parts.append(f"**NOT below {failed}/{n}**")
    return "; ".join(parts)


def markdown(runs: Sequence[Run]) -> str:
    """The table: mean rewards over the tasks per policy and fault rate, and how each adversary fared."""
    names = list(REWARDS)
    comparisons = compare(runs)
    policies = list(dict.fromkeys(r.policy for r in runs))
    rates = list(dict.fromkeys(r.fault_rate for r in runs))
    targets: Mapping[str, str | None] = {a.name: a.target for a in ADVERSARIES}
    lines = [
        "| policy | target | fault rate | total | " + " | ".join(names) + " | vs expert (per task) |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " | --- |",
    ]
    for policy in policies:
        for rate in rates:
            mine = [r for r in runs if r.policy == policy and r.fault_rate == rate]
            mean = {k: sum(r.rewards.components[k].value for r in mine) / len(mine) for k in names}
            total = sum(r.rewards.total for r in mine) / len(mine)
            cmp = [c for c in comparisons if c.adversary == policy and c.fault_rate == rate]
            vs = _verdict(cmp) if policy != EXPERT else "reference"
            cells = " | ".join(f"{mean[k]:.3f}" for k in names)
            lines.append(f"| {policy} | {targets.get(policy) or '—'} | {rate:g} | {total:.3f} | {cells} | {vs} |")
    return "\n".join(lines)
