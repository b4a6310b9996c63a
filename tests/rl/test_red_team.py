"""The red team: every adversary, run through the real graph and synthetic tools, scores below the expert.

One run of the red team (the expert and nine adversaries on five built-in tasks at fault rates
0, 0.3 and 1; about 15 s) feeds every test here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from visioncreator.rl.redteam import ADVERSARIES, EXPERT, Comparison, RedTeamConfig, Run, compare, markdown, red_team
from visioncreator.rl.redteam.__main__ import main
from visioncreator.rl.rewards import judgements

CONFIG = RedTeamConfig(task_ids=("single-000", "single-003", "multi-003", "multi-005", "img2img-004"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    """Every policy's run of every task at every fault rate."""
    store: Path = tmp_path_factory.mktemp("redteam") / "store"
    config = RedTeamConfig(task_ids=CONFIG.task_ids, store=store)
    return asyncio.run(asyncio.wait_for(red_team(config), timeout=240))


@pytest.fixture(scope="module")
def comparisons(runs: list[Run]) -> list[Comparison]:
    """Each adversary's run against the expert's."""
    return compare(runs)


def _of(comparisons: list[Comparison], adversary: str) -> list[Comparison]:
    return [c for c in comparisons if c.adversary == adversary]


def test_every_adversary_ran_every_task_at_every_fault_rate(comparisons: list[Comparison]) -> None:
    cells = {(c.adversary, c.task_id, c.fault_rate) for c in comparisons}
    assert len(cells) == len(comparisons) == len(ADVERSARIES) * len(CONFIG.task_ids) * len(CONFIG.fault_rates)


def test_the_expert_is_perfect_where_it_can_be(runs: list[Run]) -> None:
    for run in runs:
        if run.policy != EXPERT:
            continue
        values = {k: r.value for k, r in run.rewards.components.items()}
        assert values["format"] == values["tool"] == values["result"] == values["reflection"] == 1.0
        if run.fault_rate == 0.0:
            assert values["outcome"] == 1.0
            assert all(j.correct for j in judgements(run.record))


def test_each_adversary_scores_strictly_below_the_expert_or_ran_as_it(comparisons: list[Comparison]) -> None:
    for c in comparisons:
        assert c.passed, c
        if c.same is None:
            assert c.total < c.expert_total, c
            if c.target_meaningful:
                assert c.target_value is not None
                assert c.expert_target is not None
                assert c.target_value < c.expert_target, c


def test_where_every_image_is_faulty_the_expert_still_wins_on_the_total(comparisons: list[Comparison]) -> None:
    # The cells the outcome's dice once decided: accepters keeping a first image that beat the
    # expert's forced last one (single-003), and a copied multi plan whose images hold every
    # panel's objects (multi-005). The expert now keeps its least faulty attempt, and each image
    # of a multi task must lack the other panels' kinds.
    cells = {("accept-all-named", "single-003"), ("accept-all-unnamed", "single-003"), ("copied-plan", "multi-005")}
    found = [c for c in comparisons if (c.adversary, c.task_id) in cells and c.fault_rate == 1.0]
    assert len(found) == len(cells)
    for c in found:
        assert c.same is None
        assert c.total < c.expert_total, c


def test_accepting_everything_by_name_without_faults_is_the_expert(comparisons: list[Comparison]) -> None:
    for c in _of(comparisons, "accept-all-named"):
        if c.fault_rate == 0.0:
            assert c.same == "trajectory"
            assert c.total == c.expert_total
        if c.fault_rate == 1.0:  # every image is faulty: every accept is wrong
            assert c.same is None
            assert c.target_value == 0.0


def test_unnamed_accepts_are_bound_and_scored_like_named_ones(runs: list[Run], comparisons: list[Comparison]) -> None:
    for c in _of(comparisons, "accept-all-unnamed"):
        named = next(
            n for n in _of(comparisons, "accept-all-named") if (n.task_id, n.fault_rate) == (c.task_id, c.fault_rate)
        )
        assert c.total == named.total
        assert c.target_value == named.target_value
        if c.fault_rate == 0.0:
            assert c.same == "verdicts"
    unnamed = [r for r in runs if r.policy == "accept-all-unnamed" and r.fault_rate == 1.0]
    for run in unnamed:
        found = judgements(run.record)
        assert found
        assert all(j.verdict == "accept" and j.faulty and j.correct is False for j in found)


def test_skipped_reflections_earn_no_reflection_and_lose_format(comparisons: list[Comparison]) -> None:
    for name in ("empty-reflections", "missing-reflections"):
        for c in _of(comparisons, name):
            assert c.target_value == 0.0
            assert c.wrong_verdicts > 0


def test_copying_the_request_into_a_single_image_plan_is_the_expert(comparisons: list[Comparison]) -> None:
    for c in _of(comparisons, "copied-plan"):
        if c.task_id.startswith(("single", "img2img")):
            assert c.same == "trajectory"
        else:  # the panels' own requests differ from the whole request
            assert c.same is None
            assert c.target_value is not None
            assert c.expert_target is not None
            assert c.target_value < c.expert_target


def test_an_agent_that_makes_no_image_earns_no_reflection(runs: list[Run]) -> None:
    for run in runs:
        if run.policy == "no-tool-calls":
            assert run.record.tool_calls == [] or all(c.by == "graph" for c in run.record.tool_calls)
            assert run.rewards.components["reflection"].value == 0.0


def test_the_table_marks_identity_and_shows_every_policy(runs: list[Run]) -> None:
    table = markdown(runs)
    assert "= expert (same trajectory)" in table
    assert "= expert (same verdicts)" in table
    for name in [EXPERT, *(a.name for a in ADVERSARIES)]:
        assert f"| {name} |" in table
    assert table.count("\n") + 1 == 2 + (1 + len(ADVERSARIES)) * len(CONFIG.fault_rates)


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--tasks", "single-002", "--fault-rates", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("| policy |")
    assert "| accept-all-named | reflection | 0 |" in out
