"""``python -m visioncreator.rl.redteam``: print the red team's markdown table (exit 1 if an adversary is not below)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from visioncreator.rl.redteam.table import RedTeamConfig, compare, markdown, red_team


def main(argv: list[str] | None = None) -> int:
    """Run the red team and print its table; 1 when some adversary is not below the expert."""
    defaults = RedTeamConfig()
    parser = argparse.ArgumentParser(prog="python -m visioncreator.rl.redteam", description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(defaults.task_ids), help="built-in suite task ids")
    parser.add_argument("--fault-rates", nargs="+", type=float, default=list(defaults.fault_rates))
    args = parser.parse_args(argv)
    runs = asyncio.run(red_team(RedTeamConfig(task_ids=tuple(args.tasks), fault_rates=tuple(args.fault_rates))))
    print(markdown(runs))
    return 0 if all(c.passed for c in compare(runs)) else 1


if __name__ == "__main__":
    sys.exit(main())
