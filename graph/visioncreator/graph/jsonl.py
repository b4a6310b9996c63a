"""Durable JSON-lines files: one pydantic record a line, appended so that a crash loses at most a torn line.

Every record file of the project (eval results and errors, RL trajectory records) is written and
read here: :func:`append_jsonl` writes a record in one ``write`` and fsyncs it before returning
(so a record that counts as done is on disk); :func:`read_jsonl` reads them back, dropping a last
line that a killed writer left without its newline (a torn write); :func:`repair_jsonl` also cuts
that line off the file, so that the next append starts on a fresh line. Any other line that is not
a record is corruption, and an error that names the file and the line.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from visioncreator.graph.errors import GraphError

__all__ = ["JsonlError", "append_jsonl", "read_jsonl", "repair_jsonl"]

M = TypeVar("M", bound=BaseModel)

_log = logging.getLogger(__name__)


class JsonlError(GraphError, ValueError):
    """A records file with a line before its last one that is not a record (the message names file and line)."""


def append_jsonl(path: str | Path, record: BaseModel) -> None:
    """Append ``record`` as one JSON line, in one write, flushed and fsynced before returning."""
    with open(path, "ab", buffering=0) as handle:
        handle.write((record.model_dump_json() + "\n").encode())
        os.fsync(handle.fileno())


def _parse(path: Path, data: bytes, model: type[M]) -> tuple[list[M], int]:
    """The records of ``data`` and the length of its valid prefix (a torn last line excluded)."""
    records: list[M] = []
    lines = data.split(b"\n")  # the piece after the last newline is empty unless the last write was torn
    offset = 0
    for number, raw in enumerate(lines, 1):
        if raw.strip():
            try:
                records.append(model.model_validate_json(raw))
            except ValidationError as exc:
                if number == len(lines):
                    _log.warning("%s: dropping a torn last line %d (%d bytes)", path, number, len(raw))
                    return records, offset
                raise JsonlError(
                    f"{path}: line {number} is not a {model.__name__} ({_reason(exc)}); "
                    f"fix or delete line {number} of that file, then run again"
                ) from exc
        offset += len(raw) + (1 if number < len(lines) else 0)
    return records, offset


def _reason(exc: ValidationError) -> str:
    """Pydantic's first problem in a few words (the full report, with the line echoed, is in ``__cause__``)."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    where = ".".join(str(p) for p in first["loc"])
    more = f"; and {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
    # A record is one line, so pydantic's "at line 1 column N" would only contradict our line number.
    message = re.sub(r" at line 1 column (\d+)", r" at column \1", str(first["msg"]))
    return (f"{where}: " if where else "") + message + more


def read_jsonl(path: str | Path, model: type[M]) -> list[M]:
    """Every record of a JSONL file, in file order; a missing file has none.

    A last line without its newline that does not parse (a write torn by a crash) is dropped; the
    file is not changed.

    Raises:
        JsonlError: A line before the last one does not parse; the message names the line.

    """
    file = Path(path)
    if not file.exists():
        return []
    return _parse(file, file.read_bytes(), model)[0]


def repair_jsonl(path: str | Path, model: type[M]) -> list[M]:
    """Like :func:`read_jsonl`, and cut a torn last line off the file so that appends start on a fresh line.

    Raises:
        JsonlError: A line before the last one does not parse; the file is then left as it is.

    """
    file = Path(path)
    if not file.exists():
        return []
    data = file.read_bytes()
    records, valid = _parse(file, data, model)
    unterminated = valid > 0 and not data[:valid].endswith(b"\n")
    if valid < len(data) or unterminated:
        with open(file, "r+b") as handle:
            handle.truncate(valid)
            if unterminated:
                handle.seek(valid)
                handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    return records
