"""Shared test set-up: loopback-only network, quiet logging, a private image store, small image fixtures."""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", ""})


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse ``connect`` to, and name look-ups of, anything but loopback (Unix sockets pass)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise PermissionError(f"tests may only connect to loopback, not {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            raise PermissionError(f"tests may only resolve loopback names, not {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def _restore_float_state() -> Iterator[None]:
    """Undo flush-to-zero after a test: local policies set it for speed, and it breaks hypothesis' floats."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)
