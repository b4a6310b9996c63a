"""Branched rollouts: continuations forked from a base run's checkpoint at a reflect node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from tests.graph.conftest import make_client
from visioncreator.graph import AgentConfig, BranchError, TaskRunner, expert_policy
from visioncreator.policy import ExpertConfig, Task

TASK = Task(
    request="two red apples to the left of a blue cup, then the same apples on a plate", n_images=2, split="multi"
)
# An expert that errs at random: continuations with different seeds can decide differently.
EXPERT = ExpertConfig(accept_faulty_rate=0.5, over_reflect_rate=0.5)


def _dump(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [getattr(v, "model_dump", lambda v=v: v)() for v in x] if isinstance(x, list) else x
        for k, x in values.items()
    }


async def test_every_continuation_starts_from_the_identical_state_and_runs_for_real(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store", fault_rate=1.0) as tools:
        runner = TaskRunner(
            policy=expert_policy(EXPERT),
            tools=tools,
            config=AgentConfig(call_seeds="derived"),
            checkpointer=InMemorySaver(),
        )
        base = await runner.run(TASK, seed=0, thread_id="base")
        points = await runner.branch_points("base")
        assert len(points) >= 2  # every batch of images is reflected on
        assert [p.turn for p in points] == sorted(p.turn for p in points)
        point = points[0]
        assert base.trajectory.turns[point.turn].node == "reflect"
        results = [await runner.branch(point, seed=s, thread_id=f"base.b0.{s}") for s in (10, 11, 12, 13)]
        # The forked threads, rewound to their first checkpoint, hold the base state with only the seed changed.
        starts = []
        for s in (10, 11, 12, 13):
            history = [
                h async for h in runner.agent.aget_state_history({"configurable": {"thread_id": f"base.b0.{s}"}})
            ]
            first = history[-1]
            assert first.next == ("reflect",)
            assert first.values["seed"] == s
            starts.append(_dump({k: v for k, v in first.values.items() if k != "seed"}))
    assert all(start == _dump({k: v for k, v in point.values.items() if k != "seed"}) for start in starts)
    prefix = [t.model_dump() for t in base.trajectory.turns[: point.turn]]
    seen = base.trajectory.turns[point.turn].n_messages
    for result in results:
        trajectory = result.trajectory
        assert trajectory.branch is not None
        assert trajectory.branch.turn == point.turn
        assert trajectory.branch.thread_id == "base"
        assert trajectory.branch.node == "reflect"
        assert [t.model_dump() for t in trajectory.turns[: point.turn]] == prefix
        # The first continuation turn saw exactly the base's conversation: the same prompt.
        assert trajectory.turns[point.turn].n_messages == seen
        assert [m.model_dump() for m in trajectory.messages[:seen]] == [
            m.model_dump() for m in base.trajectory.messages[:seen]
        ]
        assert trajectory.termination == "answered"
        assert trajectory.truths  # the continuation's images were made by the real tools and have ground truth
    # The continuations are separate samples: the seeds change what the expert decides.
    texts = {tuple(t.text for t in r.trajectory.turns[point.turn :]) for r in results}
    assert len(texts) > 1


async def test_a_fork_is_resumed_not_redone_and_a_missing_node_is_an_error(tmp_path: Path) -> None:
    async with make_client(tmp_path / "store", fault_rate=1.0) as tools:
        runner = TaskRunner(policy=expert_policy(), tools=tools, checkpointer=InMemorySaver())
        await runner.run(TASK, seed=0, thread_id="base")
        point = (await runner.branch_points("base"))[0]
        first = await runner.branch(point, seed=5, thread_id="fork")
        again = await runner.branch(point, seed=5, thread_id="fork")
        assert again.resumed
        assert again.trajectory.model_dump(exclude={"timings", "visioncreator"}) == first.trajectory.model_dump(
            exclude={"timings", "visioncreator"}
        )
        assert await runner.branch_points("base", node="nowhere") == []
        with pytest.raises(BranchError, match="no checkpoint"):
            await runner.branch_points("never-run")
