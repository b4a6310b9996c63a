"""Errors of the rl package: one base, :class:`RLError`, so a caller can catch anything from rl.

The subclasses live next to the code that raises them and are exported with it: ``CollectError``,
``RecordsError``, ``SampleError``, ``AdvantageError`` and ``ExportError`` by ``visioncreator.rl``;
``TrainingError``, ``ConfigError`` and ``ModelError`` by ``visioncreator.rl.train``; and
``TrajectoryImagesError`` by ``visioncreator.rl.train.vlm`` (which imports TRL). Those about bad input are also
``ValueError``s.
"""

from __future__ import annotations

__all__ = ["RLError"]


class RLError(Exception):
    """Base class of every error raised by ``visioncreator.rl``."""
