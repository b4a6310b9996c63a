"""The judge's answers in SQLite: asking the same thing twice costs one request."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from visioncreator.evals.judge.request import JudgeRequest

__all__ = ["JudgeCache"]


class JudgeCache:
    """Judge answers in SQLite, keyed by model, prompt, image digests and schema.

    Safe to share between tasks of one event loop and between processes (WAL mode). Only answers
    that parsed are stored.

    Args:
        path: Database file (created with its folder), or ``":memory:"``.

    """

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if str(path) != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, answer TEXT NOT NULL, "
                "created REAL NOT NULL)"
            )
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model: str, request: JudgeRequest, schema: Mapping[str, Any]) -> str:
        """The cache key of a request: a SHA-256 over model, prompts, image digests and schema."""
        parts = {
            "model": model,
            "system": request.system,
            "prompt": request.prompt,
            "images": [hashlib.sha256(image).hexdigest() for image in request.images],
            "name": request.name,
            "schema": schema,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _put(self, key: str, model: str, answer: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, model, answer, created) VALUES (?, ?, ?, ?)",
                (key, model, answer, time.time()),
            )

    async def get(self, key: str) -> str | None:
        """The stored answer text for ``key``, or ``None`` (counted as a hit or a miss)."""
        found = await asyncio.to_thread(self._get, key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    async def put(self, key: str, model: str, answer: str) -> None:
        """Store an answer that parsed."""
        await asyncio.to_thread(self._put, key, model, answer)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
