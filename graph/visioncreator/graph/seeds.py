"""Seeds of image calls: every image a run makes is reproducible from the run's seeds.

The graph gives each image call a seed derived from the run's ``call_seed_base``, the plan step
the call serves and the attempt at that step (0 for the first call, 1 for the first redo...):

- with ``AgentConfig.call_seeds = "policy"`` (the default) the policy's own seed is kept and only
  a call without one gets the derived seed, so a run never depends on a server's random draw;
- with ``"derived"`` every image call gets the derived seed, whatever the policy wrote. Runs that
  share ``call_seed_base`` then meet the same tool randomness at the same step and attempt: the
  members of a GRPO group get common random numbers (the same first-image faults), while a redo,
  a later attempt, draws a new image.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from visioncreator.policy import Task

__all__ = ["CallSeeds", "call_seed", "default_call_seed_base"]

CallSeeds = Literal["policy", "derived"]
"""Who picks an image call's seed: the policy (a missing one derived), or always the graph."""

_SEED_RANGE = 2**31 - 1  # the tools' seed fields are non-negative 32-bit integers


def _digest(*parts: object) -> int:
    data = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def call_seed(base: int, step: int | str, attempt: int) -> int:
    """The seed of the ``attempt``-th image call for plan ``step`` in a run with seed base ``base``.

    Args:
        base: The run's ``call_seed_base``.
        step: The plan step the call serves (a call without a step: a key of its own).
        attempt: 0 for the step's first call, then 1, 2... for its redos.

    """
    return _digest("call-seed", base, step, attempt) % _SEED_RANGE


def default_call_seed_base(task: Task, seed: int) -> int:
    """The seed base of a run that was given none: a function of the task and the run seed."""
    return _digest("call-seed-base", task.model_dump_json(exclude={"id"}), seed) % _SEED_RANGE
