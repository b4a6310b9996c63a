"""Argument parsing shared by the ``visioncreator`` commands: defaults in ``--help``, one-line errors.

Every subcommand checks its arguments before it starts anything (a server, a folder): a bad one
is a single line naming the option and what it accepts, and exit status 2, as argparse does for
its own errors, but without the usage block above it.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

__all__ = ["CommandParser", "HelpFormatter", "in_range", "missing_extra"]

_N = TypeVar("_N", int, float)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default; descriptions and epilogs keep their line breaks.

    An option whose help already says its default, or whose default is ``None`` (decided later,
    the help says by what) or ``False`` (a switch), is left as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is None
            or action.default is False  # a switch (0 == False: compare by identity)
            or action.default == argparse.SUPPRESS
            or "default" in text
            or "%(default)" in text
        ):
            return action.help
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: ...``) and exit status 2.

    Its help shows the defaults (:class:`HelpFormatter`); subparsers are of the same class.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def in_range(kind: type[_N], low: _N | None = None, high: _N | None = None) -> Callable[[str], _N]:
    """An argparse ``type`` that reads ``kind`` (int or float) and accepts ``low <= value <= high``.

    Args:
        kind: ``int`` or ``float`` (floats must be finite).
        low: The smallest value allowed (``None``: no bound).
        high: The largest value allowed (``None``: no bound).

    Returns:
        The converter; its error names the range, e.g. ``must be a number from 0 to 1, got 2``.
    """
    noun = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        allowed = f"{noun} from {low:g} to {high:g}"
    elif low is not None:
        allowed = f"{noun} of at least {low:g}"
    elif high is not None:
        allowed = f"{noun} of at most {high:g}"
    else:
        allowed = noun

    def convert(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if (
            (isinstance(value, float) and not math.isfinite(value))
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


def missing_extra(extra: str, modules: tuple[str, ...]) -> str | None:
    """What to install when one of ``modules`` cannot be imported, as a phrase; None when all can.

    Looked up without importing anything (an import hook that refuses a module counts as missing).

    Args:
        extra: The extra of ``visioncreator`` that installs them, e.g. ``diffusers``.
        modules: Top-level module names, e.g. ``("torch", "diffusers")``.

    Returns:
        ``needs the EXTRA extra (missing: ...): pip install 'visioncreator[EXTRA]'``, or None.
    """
    missing = [name for name in modules if not _importable(name)]
    if not missing:
        return None
    return f"needs the {extra} extra (missing: {', '.join(missing)}): pip install 'visioncreator[{extra}]'"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # an import hook refused it, or a broken half-installed package
        return False
