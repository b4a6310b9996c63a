"""The durable JSONL record files every package writes: appends, torn last lines, corrupt lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from visioncreator.graph import JsonlError, append_jsonl, read_jsonl, repair_jsonl


class Item(BaseModel):
    n: int


def test_appended_records_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    assert read_jsonl(path, Item) == []
    for n in range(3):
        append_jsonl(path, Item(n=n))
    assert read_jsonl(path, Item) == [Item(n=0), Item(n=1), Item(n=2)]
    assert path.read_text() == '{"n":0}\n{"n":1}\n{"n":2}\n'


def test_a_torn_last_write_is_skipped_and_repair_cuts_it(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    append_jsonl(path, Item(n=1))
    good = path.read_bytes()
    path.write_bytes(good + b'{"n": 2')  # a killed process: no closing brace, no newline
    assert read_jsonl(path, Item) == [Item(n=1)]
    assert path.read_bytes() == good + b'{"n": 2'  # reading changes nothing
    assert repair_jsonl(path, Item) == [Item(n=1)]
    assert path.read_bytes() == good
    append_jsonl(path, Item(n=3))
    assert read_jsonl(path, Item) == [Item(n=1), Item(n=3)]


def test_a_whole_last_record_without_its_newline_is_kept_and_repair_ends_its_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}')
    assert repair_jsonl(path, Item) == [Item(n=1), Item(n=2)]
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'


@pytest.mark.parametrize("content", [b'{"n": 1}\n{oops\n{"n": 3}\n', b'{"n": 1}\n{"m": 2}\n'], ids=["middle", "last"])
def test_a_complete_line_that_is_not_a_record_is_an_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(content)
    with pytest.raises(JsonlError, match=r"items\.jsonl: line 2 is not a Item"):
        read_jsonl(path, Item)
    with pytest.raises(JsonlError):
        repair_jsonl(path, Item)
    assert path.read_bytes() == content  # a corrupt file is left for a person to look at
