"""Coroutines on the event loop that owns them, from any thread: what lets sync code drive the agent.

An MCP session, and an HTTP policy's connection pool, belong to the event loop they were opened
on. Sync LangGraph (``invoke``, ``stream``) runs nodes in worker threads without a loop, and an app
may call ``ainvoke`` on another loop than the one that opened the tools: both hand the work to
the owning loop. :func:`run_on` does that from a thread (keeping the caller's context variables, so
LangGraph's config and stream writer reach the node), :class:`LoopThread` is a loop of one's own
in a daemon thread for sync apps (see :func:`~visioncreator.graph.open_agent_sync`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

__all__ = ["LoopThread", "run_on"]

_T = TypeVar("_T")

_STOP_TIMEOUT_S = 10.0
"""Longest wait for a loop thread to finish its pending callbacks and exit."""


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on ``loop`` (owned by another thread) and wait for its result.

    The coroutine runs in a copy of the caller's context (LangGraph's config and stream writer
    included). A caller that is itself running on ``loop`` would wait forever: it gets an error.

    Raises:
        RuntimeError: ``loop`` is closed, or is the caller's own running loop.

    """
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop or loop.is_closed():
        coro.close()
        why = "is closed" if loop.is_closed() else "is this thread's running loop: use ainvoke/astream there"
        raise RuntimeError(f"cannot wait for the agent's event loop: it {why}")
    context = contextvars.copy_context()
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def start() -> None:
        if not done.set_running_or_notify_cancel():
            coro.close()
            return
        task = loop.create_task(coro, context=context)
        task.add_done_callback(lambda t: _settle(t, done))

    loop.call_soon_threadsafe(start)
    return done.result()


def _settle(task: asyncio.Task[_T], done: concurrent.futures.Future[_T]) -> None:
    if task.cancelled():
        done.set_exception(concurrent.futures.CancelledError())
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(task.result())


class LoopThread:
    """An event loop running in a daemon thread of its own; use as a context manager.

    Example:
        with LoopThread() as loop:
            value = loop.run(some_coroutine())

    """

    def __init__(self, name: str = "visioncreator-loop") -> None:
        self.loop = asyncio.new_event_loop()
        """The loop: hand coroutines to it with :meth:`run` (or :func:`run_on`)."""
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the loop and wait for its result (see :func:`run_on`)."""
        return run_on(self.loop, coro)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and close it."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            self.run(_cancel_others())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(_STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()


async def _cancel_others() -> None:
    """Cancel every other task of the running loop and wait for them to end."""
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
