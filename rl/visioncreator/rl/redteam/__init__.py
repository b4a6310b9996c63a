"""The red team: scripted adversaries that chase rewards without the work, and the table that checks them.

Run ``python -m visioncreator.rl.redteam`` after changing a reward: it prints, per fault rate,
every reward of the expert and of each adversary on the same tasks, and whether each adversary
scores strictly below the expert (or ran exactly as the expert did).

- :mod:`~visioncreator.rl.redteam.adversaries`: the adversaries (:data:`ADVERSARIES`), each the
  scripted expert rewritten at one node;
- :mod:`~visioncreator.rl.redteam.table`: :func:`red_team` runs them, :func:`compare` and
  :func:`markdown` judge and show the results.
"""

from visioncreator.rl.redteam.adversaries import (
    ADVERSARIES,
    AcceptAllNamed,
    AcceptAllUnnamed,
    Adversary,
    CopiedPlan,
    EmptyReflections,
    EndlessRedo,
    MissingReflections,
    NoToolCalls,
    RejectAll,
    StuffedAnswer,
)
from visioncreator.rl.redteam.table import (
    EXPERT,
    Comparison,
    RedTeamConfig,
    Run,
    compare,
    markdown,
    red_team,
    red_team_tasks,
)

__all__ = [
    "ADVERSARIES",
    "EXPERT",
    "AcceptAllNamed",
    "AcceptAllUnnamed",
    "Adversary",
    "Comparison",
    "CopiedPlan",
    "EmptyReflections",
    "EndlessRedo",
    "MissingReflections",
    "NoToolCalls",
    "RedTeamConfig",
    "RejectAll",
    "Run",
    "StuffedAnswer",
    "compare",
    "markdown",
    "red_team",
    "red_team_tasks",
]
