"""Fault injection for the CLI tests: make the modules named in $VISIONCREATOR_TEST_MISSING unimportable.

Put this folder first on PYTHONPATH of a subprocess: Python imports ``sitecustomize`` at start-up,
and the finder below makes ``import NAME`` (and ``importlib.util.find_spec``) fail for each name,
as if the extra that installs it were missing.
"""

import os
import sys
from importlib.abc import MetaPathFinder

_MISSING = frozenset(filter(None, os.environ.get("VISIONCREATOR_TEST_MISSING", "").split(",")))


class _Missing(MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in _MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


if _MISSING:
    sys.meta_path.insert(0, _Missing())
