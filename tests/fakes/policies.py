"""Fault-injecting wrappers around a real policy: a slow one, and one that crashes at a node."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from visioncreator.policy import Policy, PolicyRequest, PolicyTurn


@dataclass
class SlowPolicy:
    """``inner``, each turn ``delay_s`` late (a model that takes its time)."""

    inner: Policy
    delay_s: float
    name: str = "slow"

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        await asyncio.sleep(self.delay_s)
        return await self.inner.respond(request)


@dataclass
class CrashAt:
    """``inner``, except that its first turn at ``node`` raises (a process dying mid-task)."""

    inner: Policy
    node: str
    name: str = "crashing"
    crashed: bool = False

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        if request.node == self.node and not self.crashed:
            self.crashed = True
            raise RuntimeError(f"injected crash at {self.node}")
        return await self.inner.respond(request)
