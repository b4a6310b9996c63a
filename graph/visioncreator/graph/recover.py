"""Checkpoints a killed process left with nothing next although the run has not ended.

Two shapes were seen (``tests/rl/test_pool_cli.py`` under load, read back from the workers'
SQLite files): the step's checkpoint saved without its route, and the step's task writes saved
(an ``__error__`` beside the node's updates, no route) that a resume applies, ending with nothing
next. The first is caught before the resumed run streams, the second when its stream ends.

LangGraph saves a step's writes and its checkpoint separately. A process killed mid-step (a
collection driver's SIGKILL, measured in ``tests/rl/test_pool_cli.py``) can leave the step's
checkpoint with the node's state updates but without the edges out of it (the Sends to the
tools): the checkpoint then has nothing next, and a resume would take it for a finished run.
Every end of this graph settles a termination (or an answer), so such a checkpoint is told
apart, and the resume follows the node's edges again on the saved state
(``update_state(config, None, as_node=node)``): the same route the node would have taken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lost_route", "lost_route_sync", "reroute", "reroute_sync", "rerouted", "rerouted_sync", "unfinished"]


def unfinished(values: Mapping[str, Any]) -> bool:
    """Whether a saved state has not ended: no termination and no answer settled."""
    return not values.get("termination") and values.get("answer") is None


def _one_node(parent: Any) -> str | None:
    names = {t.name for t in parent.tasks}
    return names.pop() if len(names) == 1 else None


async def lost_route(agent: Any, snapshot: Any) -> str | None:
    """The node whose route was lost, for a snapshot with nothing next; None where the run ended.

    The node is the one task of the step before the snapshot (None where that step was not one
    node: there is no single route to follow).
    """
    if not unfinished(snapshot.values) or snapshot.parent_config is None:
        return None
    return _one_node(await agent.aget_state(snapshot.parent_config))


def lost_route_sync(agent: Any, snapshot: Any) -> str | None:
    """:func:`lost_route` with the checkpointer's blocking methods."""
    if not unfinished(snapshot.values) or snapshot.parent_config is None:
        return None
    return _one_node(agent.get_state(snapshot.parent_config))


async def reroute(agent: Any, config: Any, snapshot: Any, on_event: Callable[[dict[str, Any]], None] | None) -> bool:
    """Follow the lost route of ``snapshot`` (a ``reroute`` event), if it lost one; whether it did."""
    node = await lost_route(agent, snapshot)
    if node is None:
        return False
    await agent.aupdate_state(config, None, as_node=node)
    if on_event is not None:
        on_event({"event": "reroute", "thread_id": config["configurable"]["thread_id"], "node": node})
    return True


async def rerouted(
    agent: Any, config: Any, values: Mapping[str, Any], on_event: Callable[[dict[str, Any]], None] | None
) -> bool:
    """After a stream ended on the unfinished state ``values`` with nothing next: :func:`reroute` it."""
    if not unfinished(values):
        return False
    snapshot = await agent.aget_state(config)
    return not snapshot.next and not snapshot.tasks and await reroute(agent, config, snapshot, on_event)


def reroute_sync(agent: Any, config: Any, snapshot: Any) -> bool:
    """:func:`reroute` with the checkpointer's blocking methods (no event)."""
    node = lost_route_sync(agent, snapshot)
    if node is None:
        return False
    agent.update_state(config, None, as_node=node)
    return True


def rerouted_sync(agent: Any, config: Any, values: Mapping[str, Any]) -> bool:
    """:func:`rerouted` with the checkpointer's blocking methods."""
    if not values or not unfinished(values):
        return False
    snapshot = agent.get_state(config)
    return not snapshot.next and not snapshot.tasks and reroute_sync(agent, config, snapshot)
