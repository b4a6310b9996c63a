"""Run folders: one writer at a time, checkpoints checked before resuming, names kept inside.

Every command that writes a folder (``run --out``, ``eval``, ``collect``) holds
:class:`FolderLock` on it for its whole life: a second process on the same folder stops at once
with "already running (pid N)" instead of forking the checkpoint thread. The lock is an advisory
``flock`` on ``<folder>/.lock``: the kernel releases it when the process dies, so a killed run
never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from visioncreator.graph.errors import GraphError

__all__ = [
    "LOCK_FILE",
    "CheckpointCorruptError",
    "FileLock",
    "FolderLock",
    "FolderLockedError",
    "PathEscapeError",
    "check_checkpoint",
    "folder_entries",
    "inside",
    "move_aside",
    "remove_new",
]

LOCK_FILE = ".lock"
"""The lock file every writer of a run folder holds."""


class FolderLockedError(GraphError):
    """Another live process is writing the same run folder."""


class CheckpointCorruptError(GraphError):
    """A checkpoint database is unreadable (malformed, truncated, not SQLite)."""


class PathEscapeError(GraphError, ValueError):
    """A name from a peer (a handle, a task id, a suite path) would leave the folder it belongs in."""


class FolderLock:
    """An exclusive, crash-safe lock on a run folder (use as a context manager).

    Args:
        folder: The run folder; created if missing.
        what: How the error names the holder's job, e.g. ``"a run"`` or ``"an eval"``.
    """

    def __init__(self, folder: str | Path, *, what: str = "a run") -> None:
        self.folder = Path(folder)
        self.what = what
        self.lock_path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def _busy(self, holder: str) -> str:
        return (
            f"{self.folder} is already in use: {self.what} is already running there (pid {holder}); "
            "wait for it to finish or stop it, then run again"
        )

    def acquire(self) -> None:
        """Take the lock, or raise :class:`FolderLockedError` naming the holder's pid."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(self._busy(holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a waiting process)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class FileLock(FolderLock):
    """:class:`FolderLock` for one file of a folder that several writers share: ``<file>.lock`` beside it.

    For a records file (``visioncreator collect --out FILE``): two collections into different files
    of one folder run side by side; two into the same file do not.

    Args:
        file: The file the holder writes; its folder is created if missing.
        what: How the error names the holder's job, e.g. ``"a collection"``.
    """

    def __init__(self, file: str | Path, *, what: str = "a collection") -> None:
        self.file = Path(file)
        super().__init__(self.file.parent, what=what)
        self.lock_path = self.file.with_name(self.file.name + ".lock")

    def _busy(self, holder: str) -> str:
        return (
            f"{self.file} is already in use: {self.what} is already writing it (pid {holder}); "
            "wait for it to finish or stop it, then run again"
        )


def check_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointCorruptError` unless ``path`` is missing or a readable SQLite file.

    A missing file is a fresh start. An empty (0-byte) file is not: something truncated it, and
    starting over silently would redo finished work, so it is reported like a malformed one.
    """
    path = Path(path)
    if not path.exists():
        return
    if path.stat().st_size == 0:
        raise CheckpointCorruptError(_corrupt(path, "the file is empty (0 bytes)"))
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise CheckpointCorruptError(_corrupt(path, f"{type(exc).__name__}: {exc}")) from exc
    if rows != [("ok",)]:
        raise CheckpointCorruptError(_corrupt(path, "; ".join(str(r[0]) for r in rows[:3])))


def _corrupt(path: Path, reason: str) -> str:
    return (
        f"the checkpoint {path} is corrupt ({reason}); resuming from it is impossible. "
        "Run again with --restart to move it aside and start the task over"
    )


def move_aside(path: str | Path, *, label: str = "corrupt") -> Path | None:
    """Rename ``path`` (and its SQLite ``-wal``/``-shm`` files) to ``<name>.<label>-<time>``; None if missing."""
    path = Path(path)
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.{label}-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(target)
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target


def inside(folder: str | Path, *parts: str) -> Path:
    """``folder/parts...``, or :class:`PathEscapeError` if that resolves outside ``folder``.

    For every file name built from something a peer sent (a handle, a task id, a suite path).
    """
    root = Path(folder).resolve()
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise PathEscapeError(f"{'/'.join(parts)!r} would leave {root}: refused")
    return target


def folder_entries(folder: str | Path) -> frozenset[str] | None:
    """The names directly in ``folder``, or None when it does not exist (see :func:`remove_new`)."""
    try:
        return frozenset(os.listdir(folder))
    except FileNotFoundError:
        return None


def remove_new(folder: str | Path, before: frozenset[str] | None) -> None:
    """Remove what a command that never started added to ``folder``: the folder itself if ``before`` is None.

    ``before`` is :func:`folder_entries` from before the command touched the folder; entries that
    were there are left alone, so a folder the user made (or an earlier run filled) keeps its files.
    """
    folder = Path(folder)
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in set(folder_entries(folder) or ()) - before:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def checkpoint_file(path: str | Path | None, synchronous: str) -> Path | None:
    """What both checkpointer openers check first: the SQLite file to open, made ready; None: in memory.

    Raises:
        ValueError: ``synchronous`` is not ``NORMAL`` or ``FULL``.
        CheckpointCorruptError: ``path`` exists and is not a readable SQLite database.

    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
    if path is None or str(path) == ":memory:":
        return None
    # A malformed or truncated file would fail every resume the same way, or (0 bytes) silently
    # start over: say so once, with the way out (--restart moves it aside).
    check_checkpoint(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return Path(path)
