"""Shared by the load benchmarks: a real HTTP tool server process and its resident memory.

``start_http_server`` spawns ``python -m visioncreator.tool_servers --transport http --port 0`` and
waits for its ``listening on <url>`` line; ``rss_bytes``/``peak_rss_bytes`` read the process's
memory (psutil when installed, else ``/proc/PID/status``); ``peak_sampler`` samples RSS in a
background thread while a block runs and reports the highest value seen.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Peak", "peak_rss_bytes", "peak_sampler", "rss_bytes", "server_process", "start_http_server", "stop"]

_LISTENING = re.compile(r"listening on (http://\S+)")


def start_http_server(
    extra_args: Sequence[str] = (),
    *,
    store: Path | None = None,
    env: dict[str, str] | None = None,
    start_timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a tool server process over streamable HTTP on a free loopback port.

    Args:
        extra_args: More command-line arguments (limits, back end, ``--token-file`` ...).
        store: Image store directory; a fresh temporary one when None.
        env: Environment of the process; this process's when None.
        start_timeout_s: Seconds to wait for the ``listening on`` line.

    Returns:
        The process (stderr goes to ``<store>-server.log``) and its endpoint URL. Stop it with ``stop``.
    """
    if store is None:
        store = Path(tempfile.mkdtemp(prefix="vc-load-")) / "store"
    log_path = store.parent / f"{store.name}-server.log"
    command = [sys.executable, "-m", "visioncreator.tool_servers", "--transport", "http", "--port", "0"]
    command += ["--store", str(store), *extra_args]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.monotonic() + start_timeout_s
    while (found := _LISTENING.search(log_path.read_text())) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError("server did not start: " + log_path.read_text())
        time.sleep(0.05)
    return process, found.group(1)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Terminate ``process`` and wait for it (kill it if it does not stop within ``timeout_s``)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)


@contextmanager
def server_process(
    extra_args: Sequence[str] = (), *, store: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``start_http_server`` as a context manager that always stops the process.

    Without ``store`` the image store and the server log live in a temporary directory that is
    removed afterwards.
    """
    with contextlib.ExitStack() as cleanup:
        if store is None:
            store = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="vc-load-"))) / "store"
        process, url = start_http_server(extra_args, store=store, env=env)
        try:
            yield process, url
        finally:
            stop(process)


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` now, in bytes."""
    try:
        import psutil
    except ImportError:
        return _status_kib(pid, "VmRSS") * 1024
    return int(psutil.Process(pid).memory_info().rss)


def peak_rss_bytes(pid: int) -> int:
    """The highest resident memory process ``pid`` has had since it started (Linux VmHWM), in bytes."""
    return _status_kib(pid, "VmHWM") * 1024


@dataclass
class Peak:
    """What ``peak_sampler`` saw: the highest RSS sampled, and how many samples it took."""

    bytes: int = 0
    samples: int = 0
    series: list[tuple[float, int]] = field(default_factory=list)


@contextmanager
def peak_sampler(pid: int, interval_s: float = 0.02) -> Iterator[Peak]:
    """Sample ``pid``'s RSS every ``interval_s`` while the block runs; the yielded ``Peak`` fills in.

    A sampler can miss a spike shorter than its interval; ``peak_rss_bytes`` (the kernel's
    high-water mark) cannot, but it never goes down, so it only bounds the whole run.
    """
    peak = Peak()
    done = threading.Event()
    start = time.monotonic()

    def _sample() -> None:
        while True:
            try:
                value = rss_bytes(pid)
            except (OSError, RuntimeError):
                return
            peak.bytes = max(peak.bytes, value)
            peak.samples += 1
            peak.series.append((time.monotonic() - start, value))
            if done.wait(interval_s):
                return

    thread = threading.Thread(target=_sample, name=f"rss-{pid}", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join(timeout=5)
        # One last sample so a block shorter than the interval still counts.
        if os.path.exists(f"/proc/{pid}"):
            peak.bytes = max(peak.bytes, rss_bytes(pid))
