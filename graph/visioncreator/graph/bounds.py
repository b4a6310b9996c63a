"""What a policy turn may bring into the graph's state: bounded size, storable text.

Every turn passes here before it is recorded, whatever the back end (HTTP, local, scripted), so
that a checkpoint, ``trajectory.json`` and the next request to the policy always serialize and
grow by a bounded amount per turn:

- a turn longer than ``AgentConfig.max_turn_chars`` (or with more token ids or log-probabilities
  than that) is cut to the cap with a marker; none of its segments is used; its completion token
  ids and log-probabilities are dropped; it carries one ``too_long`` format error;
- a lone surrogate (text no UTF-8 record can hold) in the text, a segment or an error message is
  replaced by U+FFFD; a segment that held one is not used; the turn carries a ``bad_unicode``
  format error (the parser already reports most; this catches back ends that build turns by hand);
- at most ``AgentConfig.max_turn_errors`` errors are kept, the rest counted in one last error.

Each of these is a format error the policy reads on its next turn, and it counts against the
format reward like any unparsable turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from visioncreator.graph.config import AgentConfig
from visioncreator.policy import FormatError, ParsedTurn, PolicyTurn, Segment

__all__ = ["bounded_feedback", "bounded_turn"]

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _scrub(text: str) -> str:
    return _SURROGATE_RE.sub("\ufffd", text)


def _serializes(value: ParsedTurn | Segment) -> bool:
    try:
        value.model_dump_json()
    except ValueError:  # PydanticSerializationError: a string UTF-8 cannot encode
        return False
    return True


def _cut(turn: PolicyTurn, cap: int) -> PolicyTurn:
    text = turn.text
    tokens = max(len(turn.completion_token_ids or ()), len(turn.logprobs or ()))
    if len(text) <= cap and tokens <= cap:
        return turn
    kept = text[:cap]
    cut = f"{kept}\n[cut: {len(text) - len(kept)} more characters, over max_turn_chars={cap}]"
    size = f"{len(text)} characters" if len(text) > cap else f"{tokens} tokens"
    error = FormatError(
        code="too_long",
        message=f"the turn is {size} long, over the limit of {cap}: it was cut, and none of its segments "
        "was used; write shorter turns",
        start=len(kept),
        end=len(cut),
    )
    return turn.model_copy(
        update={"text": cut, "parsed": ParsedTurn(errors=(error,)), "completion_token_ids": None, "logprobs": None}
    )


def _valid_unicode(turn: PolicyTurn) -> PolicyTurn:
    raw = _SURROGATE_RE.search(turn.text)
    if raw is None and _serializes(turn.parsed) and not _SURROGATE_RE.search(turn.model):
        return turn
    segments = tuple(s for s in turn.parsed.segments if _serializes(s))
    errors = tuple(e.model_copy(update={"message": _scrub(e.message)}) for e in turn.parsed.errors)
    if len(segments) < len(turn.parsed.segments) or (raw is not None and all(e.code != "bad_unicode" for e in errors)):
        at = raw.start() if raw is not None else 0
        where = f"lone surrogate at offset {at}" if raw is not None else "a lone surrogate in a segment's value"
        error = FormatError(
            code="bad_unicode",
            message=f"the turn contains invalid Unicode ({where}); any segment holding it is not used",
            start=at,
            end=at + 1 if raw is not None else 0,
        )
        errors = (*errors, error)
    parsed = ParsedTurn(segments=segments, errors=errors)
    return turn.model_copy(update={"text": _scrub(turn.text), "model": _scrub(turn.model), "parsed": parsed})


def _capped_errors(turn: PolicyTurn, limit: int) -> PolicyTurn:
    errors = turn.parsed.errors
    if len(errors) <= limit:
        return turn
    rest = errors[limit - 1 :]
    summary = FormatError(
        code=rest[0].code,
        message=f"{len(rest)} more format errors in this turn, not shown",
        start=rest[0].start,
        end=max(e.end for e in rest),
    )
    parsed = ParsedTurn(segments=turn.parsed.segments, errors=(*errors[: limit - 1], summary))
    return turn.model_copy(update={"parsed": parsed})


def bounded_turn(turn: PolicyTurn, config: AgentConfig) -> PolicyTurn:
    """The turn as the graph records it: within ``max_turn_chars`` and ``max_turn_errors``, valid Unicode.

    Args:
        turn: The turn the policy returned.
        config: The agent's configuration (its caps).

    Returns:
        ``turn`` itself when it is within bounds, else a bounded copy whose format errors say what
        was done (see the module docstring).

    """
    return _capped_errors(_valid_unicode(_cut(turn, config.max_turn_chars)), config.max_turn_errors)


def bounded_feedback(feedback: Sequence[FormatError | str], limit: int) -> list[FormatError | str]:
    """At most ``limit`` problems for the error observation: the first ones, then how many more there were."""
    if len(feedback) <= limit:
        return list(feedback)
    return [*feedback[: limit - 1], f"{len(feedback) - limit + 1} more problems with this turn, not shown"]
