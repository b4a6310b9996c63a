"""Branched rollouts: many continuations of one saved state (LangGraph's checkpoint time travel).

A base run leaves one checkpoint per step in its thread. :func:`branch_points` finds the ones
where a given node (``reflect``) is next; :func:`fork` copies one of them into a new thread, with
only the run seed changed (the seed the policy samples with), so that every continuation starts
from the identical state: the same conversation, the same images, the same budgets spent and the
same image-call seed base (so the continuations also share their tool randomness). Each
continuation then runs through the real graph and tools like any resumed thread.

The copy is written with the checkpointer's own ``aput``; the writes saved against the source
checkpoint (the base run's own next step) are not copied, so the continuation runs that step anew.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig

from visioncreator.graph.builder import Agent
from visioncreator.graph.errors import GraphError

__all__ = ["BranchError", "BranchPoint", "branch_points", "fork"]


class BranchError(GraphError, ValueError):
    """A thread cannot be branched: no checkpointer, no such thread, or the node never came next."""


@dataclass(frozen=True, slots=True)
class BranchPoint:
    """A checkpoint of a base thread where ``node`` runs next."""

    config: RunnableConfig
    """The checkpoint's config (thread id and checkpoint id)."""
    node: str
    turn: int
    """Policy turns already taken at this checkpoint (the next one is the branch's first)."""
    values: dict[str, Any]

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint's id."""
        return str(self.config["configurable"]["checkpoint_id"])


async def branch_points(agent: Agent, thread_id: str, node: str = "reflect") -> list[BranchPoint]:
    """The checkpoints of ``thread_id`` where ``node`` runs next, oldest first.

    Raises:
        BranchError: The agent has no checkpointer, or the thread has no checkpoint.

    """
    if agent.checkpointer is None:
        raise BranchError("branching needs an agent compiled with a checkpointer")
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    history = [s async for s in agent.aget_state_history(config)]
    if not history:
        raise BranchError(f"thread {thread_id!r} has no checkpoint to branch from")
    points = [
        BranchPoint(config=s.config, node=node, turn=len(s.values.get("turns", ())), values=dict(s.values))
        for s in reversed(history)
        if s.next == (node,)
    ]
    return points


async def fork(agent: Agent, point: BranchPoint, thread_id: str, *, seed: int) -> RunnableConfig:
    """Copy the checkpoint of ``point`` into the new thread ``thread_id`` with run seed ``seed``.

    A thread that already has a checkpoint is left as it is (a re-run resumes it, nothing is lost).

    Returns:
        The config of the new thread (run it with ``agent.ainvoke(None, config)`` or ``run_task``).

    Raises:
        BranchError: The agent has no checkpointer, or the checkpoint is gone.

    """
    saver = agent.checkpointer
    if saver is None or saver is True or saver is False:
        raise BranchError("branching needs an agent compiled with a checkpointer instance")
    target: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    if await saver.aget_tuple(target) is not None:
        return {"configurable": {"thread_id": thread_id}}
    saved = await saver.aget_tuple(point.config)
    if saved is None:
        raise BranchError(
            f"checkpoint {point.checkpoint_id} of thread {point.config['configurable']['thread_id']!r} is gone"
        )
    checkpoint = copy.copy(saved.checkpoint)
    checkpoint["channel_values"] = {**saved.checkpoint["channel_values"], "seed": seed}
    metadata: Any = {**saved.metadata, "source": "fork", "parents": {}}
    await saver.aput(target, checkpoint, metadata, dict(checkpoint["channel_versions"]))
    return {"configurable": {"thread_id": thread_id}}
