"""``python -m visioncreator.rl.train``: train the policy from a configuration file (``visioncreator train``)."""

from visioncreator.rl.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
