"""Waiting on other processes, and a process that holds a lock until the test lets it go."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

WAIT_S = 120.0


def wait_for(
    predicate: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None, *, wait_s: float = WAIT_S
) -> None:
    """Poll ``predicate`` until it holds; fail if ``proc`` exits first or ``wait_s`` passes."""
    deadline = time.monotonic() + wait_s
    while not predicate():
        assert proc is None or proc.poll() is None, f"the process exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextmanager
def lock_holder(acquire: str, path: str) -> Iterator[subprocess.Popen[str]]:
    """A separate Python process that runs ``acquire`` (code using ``sys.argv[1]``, i.e. ``path``) and
    keeps what it took until the block ends (the kernel then drops its ``flock``)."""
    code = f"import sys; {acquire}; print('held', flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
