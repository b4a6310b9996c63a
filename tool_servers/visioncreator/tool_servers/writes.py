"""The store's write-behind: PNG files encoded and written on one writer thread, readable meanwhile.

A tool call answers once its image's handle is known; the file follows a few milliseconds later.
Until then every store of this process over the same directory reads the pending image from here
(the encoded bytes as soon as they exist). ``flush`` waits for all of them. The writer's thread is
joined at interpreter exit, so a clean shutdown loses no pending write; a kill -9 loses those
still pending.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from visioncreator.tool_servers.errors import UnknownHandleError

__all__ = ["Pending", "PendingWrites", "pending_writes", "write_atomic"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Pending:
    """A write on the writer thread: the file's bytes once encoded, and whether they are on disk."""

    data: Future[bytes] = field(default_factory=Future)
    written: threading.Event = field(default_factory=threading.Event)


def write_atomic(path: Path, data: bytes, root: Path) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (never a torn file).

    Raises:
        UnknownHandleError: ``path``'s directory leads out of ``root`` (a link swapped in).

    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Reads trust a shard checked once; a write checks again (a link swapped in since then).
    if not path.parent.resolve().is_relative_to(root):
        raise UnknownHandleError(path.stem)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class PendingWrites:
    """The writes of this process still on their way to disk, by file path."""

    def __init__(self) -> None:
        self._pending: dict[Path, Pending] = {}
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self.failed = 0
        """Writes that failed (logged; their images live only in memory)."""
        self._failed_under: dict[Path, int] = {}

    def failed_under(self, root: Path) -> int:
        """Writes into the store at ``root`` that failed (one store's failures say nothing of another's)."""
        with self._lock:
            return self._failed_under.get(Path(root), 0)

    def get(self, path: Path) -> Pending | None:
        """The pending write of ``path``, if any."""
        with self._lock:
            return self._pending.get(path)

    def __contains__(self, path: object) -> bool:
        with self._lock:
            return path in self._pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def paths(self) -> list[Path]:
        """The paths still pending, in no particular order."""
        with self._lock:
            return list(self._pending)

    def start(self, path: Path, root: Path, encode: Callable[[], bytes]) -> None:
        """Encode and write ``path`` on the writer thread, unless it exists or is already on its way."""
        with self._lock:
            if path in self._pending or os.path.lexists(path):
                return
            # Registered before the job is queued, so no reader can miss it between the two.
            pending = self._pending[path] = Pending()
            if self._writer is None:
                # One thread: zlib and file I/O release the GIL, so it runs beside the event loop.
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visioncreator-store-writer")
            writer = self._writer
        try:
            writer.submit(self._write, path, root, encode, pending)
        except RuntimeError:
            # The interpreter is shutting down and takes no new jobs: write it here instead.
            self._write(path, root, encode, pending)

    def after(self, job: Callable[[], None]) -> threading.Event:
        """Run ``job`` on the writer thread once every write queued before it is done (at once if none ever was).

        The writer is one thread that takes jobs in order, so nothing queued earlier is still pending.
        Returns what is set once ``job`` has run (or failed, logged).
        """
        done = threading.Event()

        def run() -> None:
            try:
                _logged(job)
            finally:
                done.set()

        with self._lock:
            writer = self._writer
        if writer is not None:
            try:
                writer.submit(run)
                return done
            except RuntimeError:
                pass  # shutting down: the writer has already finished every write
        run()
        return done

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every pending write is on disk (or has failed and been logged).

        Raises:
            TimeoutError: Writes are still pending after ``timeout`` seconds.

        """
        with self._lock:
            waiting = list(self._pending.values())
        for pending in waiting:
            if not pending.written.wait(timeout):
                raise TimeoutError(f"{len(waiting)} image writes still pending after {timeout} s")

    def _write(self, path: Path, root: Path, encode: Callable[[], bytes], pending: Pending) -> None:
        try:
            data = encode()
            # Readers waiting for the file may take the bytes now.
            pending.data.set_result(data)
            if not os.path.lexists(path):
                write_atomic(path, data, root)
        except (OSError, UnknownHandleError):
            with self._lock:
                self.failed += 1
                self._failed_under[Path(root)] = self._failed_under.get(Path(root), 0) + 1
            _log.exception("writing %s failed: the image lives only in memory until this process ends", path.name)
        except BaseException as exc:
            if not pending.data.done():
                pending.data.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._pending.pop(path, None)
            pending.written.set()


def _logged(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:
        _log.exception("a job after the pending image writes failed")


pending_writes = PendingWrites()
"""Every store of this process shares it: a second store over one directory sees the first's writes."""
