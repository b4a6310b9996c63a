"""Tool arguments refused in plain sentences: unknown names, and values outside a field's limits.

A model reads these messages and must fix its next call from them alone, so each names the
argument, the limit and what it sent, and none carries pydantic's wording or its documentation
links. Everything here runs only once a call is already wrong, except :func:`unknown_arguments`,
a set difference.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Iterable
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from visioncreator.tool_servers.schemas import HANDLE_PATTERN

__all__ = ["describe_invalid", "unknown_arguments"]

_SHOWN = 40
"""Longest rendering of a value the caller sent (a prompt can be 2,000 characters)."""

# Error types whose limit lives in ``ctx`` under the key named here, with the sentence to write.
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {limit}"),
    "less_than_equal": ("le", "must be at most {limit}"),
    "greater_than": ("gt", "must be greater than {limit}"),
    "less_than": ("lt", "must be less than {limit}"),
    "string_too_long": ("max_length", "must be at most {limit} characters long"),
    "too_long": ("max_length", "must have at most {limit} items"),
    "too_short": ("min_length", "must have at least {limit} items"),
}
_KINDS = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
}


def unknown_arguments(tool: str, given: Iterable[str], known: Collection[str]) -> str | None:
    """A refusal naming every argument ``tool`` does not take, or ``None`` when there is none.

    Args:
        tool: The tool's name, for the message.
        given: The argument names of the call.
        known: The names the tool takes, in the order to list them.

    Returns:
        For example ``text_to_image does not take the argument 'sed' (did you mean 'seed'?); its
        arguments are prompt, width, height, seed, steps, guidance, preview.``

    """
    unknown = [name for name in given if name not in known]
    if not unknown:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(known), n=1)
        parts.append(f"'{_clip(name)}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    noun = "argument" if len(unknown) == 1 else "arguments"
    return f"{tool} does not take the {noun} {_join(parts)}; its arguments are {', '.join(known)}."


def describe_invalid(tool: str, error: ValidationError) -> str:
    """One sentence per invalid argument of a call to ``tool``, naming the field and its limit.

    Args:
        tool: The tool's name, for the message.
        error: What pydantic found wrong with the call's arguments.

    Returns:
        For example ``Invalid arguments for text_to_image: width must be at least 64 (got 10).``

    """
    problems = [_problem(detail) for detail in error.errors(include_url=False)]
    return f"Invalid arguments for {tool}: " + "; ".join(dict.fromkeys(problems)) + "."


def _problem(detail: ErrorDetails) -> str:
    field = _field(detail["loc"])
    kind, value, ctx = detail["type"], detail.get("input"), detail.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{field} is not an argument of this tool"
    if kind == "missing":
        return f"{field} is required"
    if kind == "string_too_short":
        limit = ctx.get("min_length", 1)
        return f"{field} must not be empty" if limit == 1 else f"{field} must be at least {limit} characters long"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == HANDLE_PATTERN:
            return f"{field} must be an image handle, 'img_' followed by 24 hex digits (got {_shown(value)})"
        return f"{field} must match the pattern {ctx.get('pattern')} (got {_shown(value)})"
    if kind in _BOUNDS:
        key, sentence = _BOUNDS[kind]
        return f"{field} {sentence.format(limit=ctx.get(key))} (got {_shown(value)})"
    if kind in _KINDS:
        return f"{field} {_KINDS[kind]} (got {_shown(value)})"
    # Any other check: pydantic's own short message ("Input should be ...") without its URL.
    return f"{field}: {detail['msg'][:1].lower()}{detail['msg'][1:]} (got {_shown(value)})"


def _field(loc: tuple[int | str, ...]) -> str:
    """``("references", 1)`` as ``references[1]``; the call as a whole as ``the arguments``."""
    if not loc:
        return "the arguments"
    name = str(loc[0])
    for part in loc[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def _shown(value: Any) -> str:
    """The value as the caller sent it, short: long strings and lists by their length."""
    if isinstance(value, str) and len(value) > _SHOWN:
        return f"{len(value)} characters"
    if isinstance(value, list | tuple | dict) and len(value) > 3:
        return f"{len(value)} items"
    try:
        return _clip(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        return _clip(repr(value))


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
