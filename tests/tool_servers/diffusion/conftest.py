"""Tiny random diffusers pipelines, built once per test session into a temporary cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest


async def eventually(check: Callable[[], bool], poll_s: float = 0.005) -> None:
    """Wait until ``check()`` holds (bound it with ``anyio.fail_after`` around the call)."""
    while True:
        if check():
            return
        await asyncio.sleep(poll_s)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the tiny pipelines (built here, once: about 10 s with imports)."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from visioncreator.tool_servers.diffusion.tiny import build_tiny

    cache = tmp_path_factory.mktemp("tiny-diffusers")
    build_tiny(cache)
    return cache
