"""A crash after a step's writes were saved but before its checkpoint was: resume must finish the task.

LangGraph saves each finished task's writes (``put_writes``) before it saves the next checkpoint
(``put``). A process killed between the two leaves a snapshot whose ``next`` is empty (every
task of the step has its writes) while ``tasks`` still holds them: the run is NOT finished. The
fault is injected deterministically by a checkpointer whose ``aput`` dies at a chosen call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.memory import InMemorySaver

from tests.graph.conftest import make_client, run
from visioncreator.graph import build_agent, run_task, run_task_sync
from visioncreator.graph.loop import LoopThread
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

    def window(snapshot: Any) -> None:
        # The window this test is about: no step left to run by `next`, yet writes pending.
        assert not snapshot.next
        assert snapshot.tasks
        saver.die_at = 0

    resumed = await _kill_then_resume(tmp_path, task, saver, window)
    assert resumed.resumed
    assert _shape(resumed.state) == _shape(clean)


async def _kill_then_resume(tmp_path: Path, task: Task, saver: InMemorySaver, window: Any) -> Any:
    """Run ``task`` until ``saver`` dies, check the checkpoint with ``window`` (which revives it), resume."""
    async with make_client(tmp_path / "store", fault_rate=0.5) as tools:
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
        with pytest.raises(Died):
            await run_task(agent, task, seed=3, thread_id="t")
        window(await agent.aget_state({"configurable": {"thread_id": "t"}}))
        return await run_task(agent, task, seed=3, thread_id="t")


TASKS = "__pregel_tasks"  # LangGraph's channel of Sends


class RouteLosingSaver(InMemorySaver):
    """Saves the first act step's writes without its Sends to the tools, then dies.

    What SIGKILLed collection workers left (seen in CI, reproduced from their SQLite files): the
    step's writes with the turn and its pending calls but no route out of it, and then either the
    step's checkpoint too (``die="next step"``: nothing next) or not (``die="checkpoint"``: a
    resume applies the writes and ends with nothing next).
    """

    def __init__(self, die: str) -> None:
        super().__init__()
        self.die = die
        self.dropped = False
        self.saved_broken = False
        self.dying = False
        self.resuming = False

    # The sync methods: InMemorySaver's async ones call them, so both kinds of run meet the fault.
    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        if self.dying:
            return  # the process is gone: nothing it writes lands
        if self.dropped:
            super().put_writes(config, writes, task_id, task_path)
            return
        sends = [w for w in writes if w[0] == TASKS]
        if sends and not self.dropped and any(getattr(v, "node", None) == "tools" for _, v in sends):
            self.dropped = True
            writes = [w for w in writes if w[0] != TASKS]
        super().put_writes(config, writes, task_id, task_path)

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, *rest: Any) -> RunnableConfig:
        metadata, new_versions = rest
        if self.dying or (self.dropped and self.die == "checkpoint" and not self.resuming):
            raise Died("killed after the lost route")
        if self.dropped and not self.saved_broken:
            # The checkpoint as the killed worker's file held it: no Sends in it either.
            self.saved_broken = True
            checkpoint = {
                **checkpoint,
                "channel_values": {k: v for k, v in checkpoint["channel_values"].items() if k != TASKS},
                "channel_versions": {k: v for k, v in checkpoint["channel_versions"].items() if k != TASKS},
            }
            new_versions = {k: v for k, v in new_versions.items() if k != TASKS}
        saved = super().put(config, checkpoint, metadata, new_versions)
        self.dying = self.saved_broken and not self.resuming
        return saved

    def revive(self, snapshot: Any) -> None:
        """Check the saved state is the broken one the killed process left, then let the resume write."""
        if self.die == "next step":  # nothing to run and nothing pending, yet the run never ended
            assert not snapshot.next
            assert not snapshot.tasks
            assert snapshot.values["termination"] is None
            assert snapshot.values["pending"]
        else:  # the act step's writes wait, without their route
            assert [t.name for t in snapshot.tasks] == ["act"]
        self.dying, self.resuming = False, True


@pytest.mark.parametrize("die", ["next step", "checkpoint"])
async def test_resume_follows_a_route_a_killed_process_lost(tmp_path: Path, die: str) -> None:
    task = Task(request="a brown dog next to a red car")
    async with make_client(tmp_path / "clean", fault_rate=0.5) as tools:
        clean = (await run(tools, task, seed=3)).state
    saver = RouteLosingSaver(die)
    resumed = await _kill_then_resume(tmp_path, task, saver, saver.revive)
    assert resumed.resumed
    assert _shape(resumed.state) == _shape(clean)


@pytest.mark.parametrize("die", ["next step", "checkpoint"])
def test_a_sync_resume_follows_a_route_a_killed_process_lost(tmp_path: Path, die: str) -> None:
    task = Task(request="a brown dog next to a red car")

    async def clean_run() -> Any:
        async with make_client(tmp_path / "clean", fault_rate=0.5) as tools:
            return (await run(tools, task, seed=3)).state

    clean = asyncio.run(clean_run())
    saver = RouteLosingSaver(die)
    with LoopThread() as loop:
        tools = loop.run(make_client(tmp_path / "store", fault_rate=0.5).__aenter__())
        try:
            agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=saver)
            with pytest.raises(Died):
                run_task_sync(agent, task, seed=3, thread_id="t")
            saver.revive(agent.get_state({"configurable": {"thread_id": "t"}}))
            resumed = run_task_sync(agent, task, seed=3, thread_id="t")
        finally:
            loop.run(tools.__aexit__(None, None, None))
    assert resumed.resumed
    assert _shape(resumed.state) == _shape(clean)
