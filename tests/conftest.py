"""Shared test set-up: quiet logging, a private image store, small image fixtures."""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

# No example database in the working tree: tests leave no files outside their tmp dirs.
settings.register_profile("visioncreator", database=None)
settings.load_profile("visioncreator")

# MCPServer's constructor calls logging.basicConfig with a rich INFO handler; a handler on the
# root logger makes that call a no-op, so tests do not print every request.
logging.getLogger().addHandler(logging.NullHandler())
for _name in ("mcp", "httpx", "httpx2", "uvicorn"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default image store into the test's tmp dir so no test writes to ~/.cache."""
    root = tmp_path / "default-store"
    monkeypatch.setenv("VISIONCREATOR_STORE", str(root))
    return root


def _png_header(width: int, height: int) -> bytes:

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def png_header() -> Callable[[int, int], bytes]:
    """Make a PNG that claims ``width`` x ``height`` pixels but holds almost no data (a decompression bomb)."""
    return _png_header
