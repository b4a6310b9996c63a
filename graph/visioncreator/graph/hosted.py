"""The agent under LangGraph Server (``langgraph dev``, ``langgraph up``, Studio): one tool session per process.

``langgraph.json`` at the repository root names :func:`make_graph` as the graph factory and
:data:`app` as the server's HTTP app. The app adds no routes: its lifespan opens the tool server
and the policy once, when the server process starts, and closes them when it stops. Every graph
access (a run, a thread's state or history, the schemas Studio reads) then gets the same compiled
agent, the server adding its own checkpointer and store to a copy: after the first access, a
lookup instead of a server start. A factory reached before the lifespan ran (or in a server
without it) opens the session on that first access.

Settings come from the environment (the shell, or ``env`` in ``langgraph.json``); see
:class:`HostSettings`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from visioncreator.graph.builder import Agent, build_agent
from visioncreator.graph.client import ToolClient
from visioncreator.graph.connection import ToolServerSpec
from visioncreator.graph.policies import open_policy

__all__ = ["AgentHost", "HostSettings", "app", "lifespan", "make_graph"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class HostSettings:
    """What the hosted agent runs with; :meth:`from_env` reads the ``VISIONCREATOR_*`` variables."""

    policy: str = "expert"
    """``VISIONCREATOR_POLICY``: ``expert``, an OpenAI-compatible base URL, or a model directory
    (see :func:`~visioncreator.graph.open_policy`)."""
    tools_url: str | None = None
    """``VISIONCREATOR_TOOLS_URL``: a streamable HTTP tool server; unset: spawn the bundled synthetic
    server over stdio."""
    tools_token: str | None = None
    """``VISIONCREATOR_TOOLS_TOKEN``: bearer token of that server."""
    store: Path = Path(".langgraph_api/visioncreator-store")
    """``VISIONCREATOR_STORE``: image store of the spawned synthetic server (beside ``langgraph dev``'s
    own state, so images outlive a restart as its threads do)."""
    fault_rate: float = 0.0
    """``VISIONCREATOR_FAULT_RATE``: fault injection rate of the spawned synthetic server (0-1)."""
    seed: int = 0
    """``VISIONCREATOR_POLICY_SEED``: seed of the policy."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HostSettings:
        """The settings the environment gives (defaults for what it leaves unset).

        Raises:
            ValueError: A number that does not parse, or a fault rate outside 0-1.
        """
        env = os.environ if environ is None else environ
        default = cls()
        fault_rate = float(env.get("VISIONCREATOR_FAULT_RATE", default.fault_rate))
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"VISIONCREATOR_FAULT_RATE must be between 0 and 1, got {fault_rate}")
        return cls(
            policy=env.get("VISIONCREATOR_POLICY", default.policy),
            tools_url=env.get("VISIONCREATOR_TOOLS_URL") or None,
            tools_token=env.get("VISIONCREATOR_TOOLS_TOKEN") or None,
            store=Path(env.get("VISIONCREATOR_STORE", str(default.store))),
            fault_rate=fault_rate,
            seed=int(env.get("VISIONCREATOR_POLICY_SEED", default.seed)),
        )

    def spec(self) -> ToolServerSpec:
        """How to reach the tool server."""
        if self.tools_url:
            return ToolServerSpec(url=self.tools_url, token=self.tools_token)
        return ToolServerSpec.synthetic(store=self.store, fault_rate=self.fault_rate)


class AgentHost:
    """The tool session, the policy and the compiled agent of one server process.

    Args:
        settings: What to run; ``None``: :meth:`HostSettings.from_env` when the host opens.

    """

    def __init__(self, settings: HostSettings | None = None) -> None:
        self._settings = settings
        self._agent: Agent | None = None
        self._stack: AsyncExitStack | None = None
        self._opening = asyncio.Lock()
        self.opens = 0
        """How many times a session was opened (one per process while the host stays open)."""

    async def agent(self) -> Agent:
        """The compiled agent, its tool server and policy opened on the first call."""
        if self._agent is not None:
            return self._agent
        async with self._opening:
            if self._agent is None:
                started = time.perf_counter()
                settings = self._settings or HostSettings.from_env()
                stack = AsyncExitStack()
                try:
                    tools = await stack.enter_async_context(ToolClient(spec=settings.spec()))
                    policy = await stack.enter_async_context(
                        open_policy(settings.policy, tools=tools, seed=settings.seed)
                    )
                except BaseException:
                    await stack.aclose()
                    raise
                self._stack, self.opens = stack, self.opens + 1
                self._agent = build_agent(policy=policy, tools=tools)
                _log.info("visioncreator: tool session opened in %.0f ms", (time.perf_counter() - started) * 1e3)
        return self._agent

    async def close(self) -> None:
        """Close the policy and the tool session (the next :meth:`agent` opens them again)."""
        async with self._opening:
            stack, self._stack, self._agent = self._stack, None, None
            if stack is not None:
                await stack.aclose()
                _log.info("visioncreator: tool session closed")


HOST = AgentHost()
"""This process's host: what :data:`app`'s lifespan opens and :func:`make_graph` hands out."""


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Open :data:`HOST` when the server starts, close it when the server stops."""
    await HOST.agent()
    try:
        yield
    finally:
        await HOST.close()


app = Starlette(lifespan=lifespan)
"""The HTTP app ``langgraph.json`` names (``http.app``): no routes of its own, only the lifespan."""


async def make_graph() -> Agent:
    """The graph factory ``langgraph.json`` names: the process's compiled agent (see :class:`AgentHost`)."""
    return await HOST.agent()
