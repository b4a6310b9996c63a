"""Fixtures of the reliability suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.security._tool_server import RestartableServer


@pytest.fixture
def restartable_server(tmp_path: Path) -> Iterator[RestartableServer]:
    """A real HTTP tool server the test starts (``.start(...)``), kills and restarts; killed at the end."""
    server = RestartableServer(tmp_path)
    try:
        yield server
    finally:
        server.kill()
