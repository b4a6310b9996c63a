"""Fault injection for the multi-process collectors: a policy whose whole worker process dies mid-trajectory."""

from __future__ import annotations

import os

from visioncreator.graph.client import ToolClient
from visioncreator.graph.offline import expert_policy
from visioncreator.policy import PolicyRequest, PolicyTurn


class DyingExpert:
    """The expert whose whole worker process dies at the reflect turn of seed 1 (fault injection)."""

    name = "expert"

    def __init__(self, tools: ToolClient) -> None:
        self.inner = expert_policy()
        self.config = self.inner.config  # the expert's identity: the same trajectory ids

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        if request.node == "reflect" and request.seed == 1:
            os._exit(1)
        return await self.inner.respond(request)
