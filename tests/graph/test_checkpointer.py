"""``open_checkpointer``'s SQLite durability: a write-ahead log, and how each commit reaches the disk."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from visioncreator.graph import open_checkpointer

LEVELS = {"NORMAL": 1, "FULL": 2}  # what SQLite's `PRAGMA synchronous` reads back


@pytest.mark.parametrize("synchronous", [None, "NORMAL", "FULL"])
async def test_the_checkpoint_file_is_a_write_ahead_log_with_the_asked_synchronous(
    tmp_path: Path, synchronous: Literal["NORMAL", "FULL"] | None
) -> None:
    kwargs = {} if synchronous is None else {"synchronous": synchronous}
    async with open_checkpointer(tmp_path / "cp.sqlite", **kwargs) as saver:
        assert isinstance(saver, AsyncSqliteSaver)
        async with saver.conn.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone()) == ("wal",)
        async with saver.conn.execute("PRAGMA synchronous") as cursor:
            assert (await cursor.fetchone()) == (LEVELS[synchronous or "NORMAL"],)


async def test_an_unknown_synchronous_is_refused_before_anything_is_opened(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        async with open_checkpointer(tmp_path / "cp.sqlite", synchronous="OFF"):  # type: ignore[arg-type]
            pass
    assert not (tmp_path / "cp.sqlite").exists()
