"""Trajectory lengths and the limits derived from them: real expert trajectories, the tiny model's real tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from visioncreator.rl.samples import TokenSample
from visioncreator.rl.train.config import GRPOStage, PolicyModel, TaskSource
from visioncreator.rl.train.lengths import (
    HEADROOM,
    LengthReport,
    context_length,
    derive_max_completion_length,
    expert_lengths,
    fits,
    refuse,
    refuse_overlong,
    round_up,
    with_completion_limit,
)

pytest.importorskip("transformers")

MULTI = TaskSource(splits=("multi",))
"""Every built-in multi-image task, faults at the default rate."""


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    from visioncreator.rl.train.models import model_dir_for

    return AutoTokenizer.from_pretrained(model_dir_for(PolicyModel(model="tiny"), tmp_path_factory.mktemp("models")))


def _sample(n: int) -> TokenSample:
    return TokenSample(
        prompt_ids=(1, 2),
        completion_ids=tuple(range(n)),
        env_mask=tuple(i % 2 for i in range(n)),
        logprobs=None,
        nodes=tuple("plan" if i % 2 else "" for i in range(n)),
        turns=tuple(0 if i % 2 else -1 for i in range(n)),
    )


def test_the_derived_limit_holds_every_built_in_multi_image_trajectory(tokenizer: Any) -> None:
    stage, report = with_completion_limit(GRPOStage(tasks=MULTI), tokenizer)
    assert report is not None
    assert report.count == 4 * 20  # four expert samples of each of the 20 multi-image tasks
    limit = stage.max_completion_length
    assert limit is not None
    assert limit % 64 == 0
    assert limit >= report.longest * HEADROOM
    # Unseen seeds (the derivation ran seeds 0-3) meet other faults; the headroom holds them too.
    for seed in (4, 5, 6):
        other = expert_lengths(MULTI, tokenizer, seed=seed)
        assert other.count == 20
        assert other.over(limit) == 0, (seed, other.longest, limit)


def test_a_stage_that_sets_its_limit_keeps_it(tokenizer: Any) -> None:
    stage = GRPOStage(tasks=MULTI, max_completion_length=512)
    assert with_completion_limit(stage, tokenizer) == (stage, None)


def test_a_report_counts_what_a_limit_would_cut(tokenizer: Any) -> None:
    report = expert_lengths(TaskSource(splits=("single",), limit=3, fault_rate=0.0), tokenizer)
    assert report.count == 3
    assert report.task_ids == ("single-000", "single-001", "single-002")
    assert all(p > 0 and c > 0 for p, c in zip(report.prompt, report.completion, strict=True))
    assert report.total == tuple(p + c for p, c in zip(report.prompt, report.completion, strict=True))
    assert report.over(report.longest) == 0
    assert report.over(report.longest - 1) >= 1
    assert report.longest_task in report.task_ids
    assert min(report.completion) <= report.median <= report.longest


def test_derivation_rounds_up_with_headroom_and_respects_the_context() -> None:
    report = LengthReport(task_ids=("a", "b"), prompt=(10, 10), completion=(100, 1000))
    assert derive_max_completion_length(report) == 1280  # ceil(1000 * 1.25) = 1250 -> 1280
    assert derive_max_completion_length(report, headroom=1.0) == 1024
    assert derive_max_completion_length(report, context=1100) == 1100
    assert round_up(1) == 64
    assert round_up(128) == 128
    with pytest.raises(ValueError, match=r"headroom must be at least 1\.0"):
        derive_max_completion_length(report, headroom=0.9)
    with pytest.raises(ValueError, match="no trajectories"):
        derive_max_completion_length(LengthReport(task_ids=(), prompt=(), completion=()))


def test_context_length_ignores_a_tokenizer_that_does_not_know_it(tokenizer: Any) -> None:
    class Unknown:
        model_max_length = int(1e30)

    class Known:
        model_max_length = 8192

    assert context_length(Unknown()) is None
    assert context_length(Known()) == 8192
    assert context_length(object()) is None


def test_an_over_long_rollout_is_refused_not_cut() -> None:
    short, long = _sample(8), _sample(20)
    assert fits(short, 8)
    assert not fits(long, 8)
    refused = refuse(long, 8)
    assert refused.completion_ids == long.completion_ids[:8]
    assert refused.policy_tokens == 0  # no token of it enters the loss
    assert refused.prompt_ids == long.prompt_ids
    batch, n_refused = refuse_overlong([short, long, short], 8)
    assert n_refused == 1
    assert batch[0] is short
    assert batch[2] is short
    assert batch[1] == refused


def test_the_expert_trajectories_are_what_sft_collects(tmp_path: Path, tokenizer: Any) -> None:
    import asyncio

    from visioncreator.rl.train.lengths import expert_trajectories, trajectory_lengths

    source = TaskSource(splits=("single",), limit=2, fault_rate=0.0)
    trajectories = asyncio.run(expert_trajectories(source, group_size=2, store=tmp_path / "store"))
    assert [t.task.id for t in trajectories] == ["single-000", "single-000", "single-001", "single-001"]
    measured = trajectory_lengths(trajectories, tokenizer)
    again = expert_lengths(source, tokenizer, group_size=2)
    assert measured.task_ids == again.task_ids
    # Image handles are random, so a token or two may differ between collections; nothing more.
    assert all(abs(a - b) <= 8 for a, b in zip(measured.completion, again.completion, strict=True))
