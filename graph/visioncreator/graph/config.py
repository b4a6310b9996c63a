"""Agent configuration: budgets, loop switches and the policy nodes' retries."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from visioncreator.graph.seeds import CallSeeds
from visioncreator.policy import PolicyConnectionError

__all__ = ["AgentConfig", "Budgets", "Durability", "RetrySettings"]

Durability = Literal["sync", "async", "exit"]
"""LangGraph's durability mode: when each step's checkpoint is written."""


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
    """Running time of the whole task: the time its steps ran, summed (a batch of parallel tool calls
    counts as its longest call). Time paused for a human, or between a crash and its resume, is not
    counted."""

    def as_dict(self) -> dict[str, int | float]:
        """The budgets as a plain dict, for prompts and records."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetrySettings:
    """When a node is run again after an exception (LangGraph's ``RetryPolicy``, with the types named).

    Only the exception types in ``retry_on`` (and their subclasses) are retried; anything else
    fails the run at once, and the run resumes from its checkpoint when started again.
    """

    max_attempts: int = 3
    """Attempts in all, the first included (1: never retried)."""
    initial_interval_s: float = 1.0
    """Wait before the first retry."""
    backoff_factor: float = 2.0
    """Each wait is this many times the one before."""
    max_interval_s: float = 30.0
    """Longest wait between attempts."""
    jitter: bool = True
    """Add a random fraction to each wait, so concurrent runs do not retry in lockstep."""
    retry_on: tuple[type[Exception], ...] = (PolicyConnectionError,)
    """The exception types worth another attempt. The default: the model server was unreachable even
    after the back end's own retries (it may be restarting, e.g. to load new weights). Add
    ``PolicyTimeoutError`` or :class:`~visioncreator.graph.PolicyTurnTimeout` to retry slow turns too."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")


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
    max_turn_chars: int = 64_000
    """Longest policy turn kept, in characters, whatever the back end. A longer turn is cut to this
    with a marker, none of its segments is used, its completion token ids and log-probabilities are
    dropped (a cut cannot be mapped onto tokens without the tokenizer; RL samples end before a turn
    without ids), and it is a ``too_long`` format error the policy sees on its next turn. The same cap
    bounds the count of a turn's token ids and log-probabilities. 64,000 is 62 characters a token for
    1,024-token turns (text runs about 4): raise it with the policy's ``max_tokens``."""
    max_turn_errors: int = 20
    """Most format errors kept per turn (in its record and in the error observation the policy
    reads); the rest are counted in one last error. Junk can hold an error every few characters."""
    policy_timeout_s: float = 300.0
    """Timeout of one policy turn (over it: :class:`~visioncreator.graph.PolicyTurnTimeout`)."""
    policy_retry: RetrySettings = field(default_factory=RetrySettings)
    """Retries of the policy nodes (plan, act, reflect, finish). The other nodes are never retried:
    tool failures come back to the policy as observations, not exceptions."""
    recursion_limit: int = 400
    """LangGraph super-step limit (a safety net; budgets stop the loop first)."""
    call_seeds: CallSeeds = "policy"
    """Who picks the seed of an image call (see :mod:`visioncreator.graph.seeds`): ``policy`` keeps the
    policy's seed and derives a missing one; ``derived`` always derives it from the run's
    ``call_seed_base``, the plan step and the attempt (common random numbers for runs that share a base)."""

    review: bool = False
    """Pause after every reflect turn for a person's review (LangGraph's ``interrupt``; needs a
    checkpointer): the interrupt shows each new image and the policy's proposed verdicts, and
    ``Command(resume=...)`` approves, asks for a redo with a note, or revises the plan (see
    :class:`~visioncreator.graph.ReviewDecision`). The verdicts are kept on the turn's record."""
    review_preview_px: int = 128
    """Longest side of the PNG thumbnail a review shows of each new image (a data URI); 0: none,
    only the ``image://`` URI and the inspection."""

    durability: Durability = "async"
    """When LangGraph saves each step: ``async`` (default) writes a step's checkpoint while the next
    step runs, and every finished task's writes as it finishes, so a killed run resumes at its last
    saved step without repeating a finished tool call; ``sync`` waits for each checkpoint before the
    next step; ``exit`` saves only when the run ends (no resume after a crash: only for runs that
    are never resumed)."""

    def __post_init__(self) -> None:
        if self.max_turn_chars < 1:
            raise ValueError(f"max_turn_chars must be at least 1, got {self.max_turn_chars}")
        if self.max_turn_errors < 1:
            raise ValueError(f"max_turn_errors must be at least 1, got {self.max_turn_errors}")
        if self.review_preview_px < 0:
            raise ValueError(f"review_preview_px must be 0 or more, got {self.review_preview_px}")
