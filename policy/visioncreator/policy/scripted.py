"""A policy that replays written turns: for tests, demos and fault injection.

Like pydantic-ai's ``FunctionModel``, it is library code, not a test-only mock: a turn is
either a fixed string or a function of the request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from visioncreator.policy.format import parse_turn
from visioncreator.policy.types import PolicyRequest, PolicyTurn

Script = str | Callable[[PolicyRequest], str]


@dataclass
class ScriptedPolicy:
    """Answers each request with the next scripted turn; repeats the last one when the script runs out."""

    turns: Sequence[Script]
    """The turns, in order."""
    name: str = "scripted"
    """Name recorded in turn records."""
    requests: list[PolicyRequest] = field(default_factory=list, init=False)
    """Every request received, in order (for assertions)."""

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        """Return the next scripted turn."""
        if not self.turns:
            raise ValueError("ScriptedPolicy needs at least one turn")
        index = min(len(self.requests), len(self.turns) - 1)
        self.requests.append(request)
        script = self.turns[index]
        text = script(request) if callable(script) else script
        return PolicyTurn(text=text, parsed=parse_turn(text), model=self.name)
