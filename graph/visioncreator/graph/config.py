"""Agent configuration: budgets and loop switches."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass(frozen=True, kw_only=True, slots=True)
class Budgets:
    """Bounds on one task's loop. Reaching one sends the agent to ``finish``."""

    max_turns: int = 40
    """Policy turns, all nodes together (format-error retries count)."""
    max_tool_calls: int = 48
    """Tool calls requested by the policy (the graph's own inspections do not count)."""
    max_redos_per_image: int = 3
    """Redos of one plan step's image; further redo calls are refused with an observation."""
    wall_time_s: float = 900.0
    """Wall time of the whole task."""

    def as_dict(self) -> dict[str, int | float]:
        """The budgets as a plain dict, for prompts and records."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentConfig:
    """How the agent loop runs."""

    budgets: Budgets = field(default_factory=Budgets)
    """Loop bounds."""
    reflect: bool = True
    """Run the reflect node after each batch of tool calls. Off: images are accepted as they come."""
    observe: Literal["inspect", "image", "both"] = "inspect"
    """How the policy sees a new image: ``inspect`` (inspect_image's structured output, for text-only
    policies), ``image`` (the handle, for vision-language policies) or ``both``."""
    max_format_retries: int = 3
    """Consecutive unparseable turns at one node before the agent gives up and finishes."""
    policy_timeout_s: float = 300.0
    """Timeout of one policy turn."""
    recursion_limit: int = 400
    """LangGraph super-step limit (a safety net; budgets stop the loop first)."""
