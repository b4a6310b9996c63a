"""A crash after a step's writes were saved but before its checkpoint was: resume must finish the task.

LangGraph saves each finished task's writes (``put_writes``) before it saves the next checkpoint
(``put``). A process killed between the two leaves a snapshot whose ``next`` is empty (every
task of the step has its writes) while ``tasks`` still holds them: the run is NOT finished. The
fault is injected deterministically by a checkpointer whose ``aput`` dies at a chosen call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.memory import InMemorySaver

from tests.graph.conftest import make_client, run
from visioncreator.graph import build_agent, run_task
from visioncreator.graph.offline import expert_policy
from visioncreator.policy import Task


class Died(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class DyingSaver(InMemorySaver):
    """An in-memory checkpointer that dies on its ``die_at``-th checkpoint (writes still land)."""

    def __init__(self, die_at: int) -> None:
        super().__init__()
        self.die_at = die_at
        self.puts = 0

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self.puts += 1
        if self.puts == self.die_at:
            raise Died(f"killed before checkpoint {self.puts}")
        return await super().aput(config, checkpoint, metadata, new_versions)


def _shape(state: dict[str, Any]) -> tuple[Sequence[Any], ...]:
    turns = tuple((t.node, t.text) for t in state["turns"])
    calls = tuple((c.name, c.handle) for c in state["tool_calls"])
    return turns, calls, tuple(state["answer"]), (state["termination"],)


@pytest.mark.parametrize("die_at", [4, 7, -1])
async def test_resume_finishes_a_task_whose_last_checkpoint_was_lost(tmp_path: Path, die_at: int) -> None:
    """``die_at`` -1: the run's very last checkpoint (counted on the clean run)."""
    task = Task(request="two red apples to the left of a blue bowl")
    counter = DyingSaver(0)
    async with make_client(tmp_path / "clean", fault_rate=0.5) as tools:
        clean = (await run(tools, task, seed=3, checkpointer=counter)).state
    assert clean["termination"] == "answered"
    die_at = counter.puts if die_at == -1 else die_at
    assert die_at <= counter.puts

    saver = DyingSaver(die_at)
    async with make_client(tmp_path / "store", fault_rate=0.5) as tools:
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
        with pytest.raises(Died):
            await run_task(agent, task, seed=3, thread_id="t")
        snapshot = await agent.aget_state({"configurable": {"thread_id": "t"}})
        # The window this test is about: no step left to run by `next`, yet writes pending.
        assert not snapshot.next
        assert snapshot.tasks
        saver.die_at = 0
        resumed = await run_task(agent, task, seed=3, thread_id="t")
    assert resumed.resumed
    assert _shape(resumed.state) == _shape(clean)
