"""Errors of the evals package: one base, :class:`EvalsError`, so a caller can catch anything from evals."""

from __future__ import annotations

__all__ = ["EvalSettingsError", "EvalsError"]


class EvalsError(Exception):
    """Base class of every error raised by ``visioncreator.evals``."""


class EvalSettingsError(EvalsError, ValueError):
    """A run cannot start: bad settings, or a run folder made with other settings."""
