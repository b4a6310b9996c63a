"""Errors of the rl package: one base, :class:`RLError`, so a caller can catch anything from rl.

The subclasses live next to the code that raises them (``CollectError`` with the collector,
``SampleError`` with token samples, ...) and are all exported by ``visioncreator.rl``. Those about
bad input are also ``ValueError``s.
"""

from __future__ import annotations

__all__ = ["RLError"]


class RLError(Exception):
    """Base class of every error raised by ``visioncreator.rl``."""
