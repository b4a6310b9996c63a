"""``python -m visioncreator.rl.collection``: collect scored expert trajectories (``visioncreator collect``)."""

from visioncreator.rl.collection.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
