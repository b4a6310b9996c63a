"""Shared by the benchmark scripts: a tool server subprocess over streamable HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def http_server(store: Path, *extra: str, ready_timeout_s: float = 60.0) -> Iterator[str]:
    """A tool server subprocess over streamable HTTP on a free loopback port; yields its URL.

    ``ready_timeout_s`` bounds the wait for it to listen (a server that preloads pipelines takes longer).
    """
    log_path = store.parent / f"{store.name}-server.log"
    command = [sys.executable, "-m", "visioncreator.tool_servers", "--transport", "http", "--port", "0"]
    command += ["--store", str(store), *extra]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while (found := re.search(r"listening on (http://\S+)", log_path.read_text())) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start: " + log_path.read_text())
            time.sleep(0.05)
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)
