"""A budget of decoded pixels shared by every in-flight tool call, and giving memory back.

Decoded images are the server's big allocations: 4 bytes a pixel, so a 40-megapixel upload
is 160 MB that a 300 KB PNG can ask for. Each call reserves the pixels it will decode, from
the header's claim, before anything is allocated, and gives them back when it is done with
them. A call that would pass ``max_inflight_pixels`` waits its turn (first come, first served,
so a large call is not starved by a stream of small ones); one that could never fit is refused
at once. The wait is bounded by the call's ``request_timeout_s``.

Memory must also go back after a burst. glibc, left alone, raises its mmap threshold to 32 MiB
after the first large free and its trim threshold to twice that, so image buffers come from
the heaps of the worker threads' arenas, and up to 64 MiB at the top of each arena's heap stays
mapped for good (``malloc_trim`` releases free chunks inside a heap, never the top of a thread
arena's). :func:`limit_allocator_retention` fixes both thresholds (buffers of 4 MiB and more are
mapped and unmapped on their own; heap tops over 4 MiB are returned on free), and when the
budget drains after large holds it asks glibc to return the free pages left (``malloc_trim``).

Pixels kept on purpose (the store's recent images) are bounded apart from the budget, by
:class:`PixelLRU`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from visioncreator.tool_servers.errors import LimitExceededError

__all__ = ["PixelBudget", "PixelHold", "PixelLRU", "limit_allocator_retention", "release_free_memory"]

_V = TypeVar("_V")

# Trimming costs a walk over the heap; after small holds there is little to give back.
_TRIM_AFTER_PIXELS = 1 << 22
# Give the finished calls' frames (and any exception tracebacks holding them) a moment to be
# dropped, so that their pixels are free by the time glibc is asked to return them.
_TRIM_DELAY_S = 0.05


# glibc's mallopt parameters (malloc.h) and the values this server sets: a decoded image line
# block is up to 16 MiB (Pillow's block size), so every large image buffer is mapped on its own.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ALLOCATOR_THRESHOLD = 4 << 20


def _libc_function(name: str) -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        # Not glibc (musl has neither call): its allocator returns memory its own way.
        return None
    return function


_MALLOC_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")


def limit_allocator_retention() -> bool:
    """Make glibc return large freed buffers to the system instead of keeping them mapped.

    Process-wide and idempotent: fixes the mmap and trim thresholds at 4 MiB (glibc would
    otherwise raise them to 32 and 64 MiB after the first large free).

    Returns:
        Whether the allocator took the settings (``False`` where it is not glibc).

    """
    if _MALLOPT is None:
        return False
    mapped = _MALLOPT(_M_MMAP_THRESHOLD, _ALLOCATOR_THRESHOLD)
    trimmed = _MALLOPT(_M_TRIM_THRESHOLD, _ALLOCATOR_THRESHOLD)
    return bool(mapped and trimmed)


def release_free_memory() -> bool:
    """Ask the C allocator to return freed memory to the system (glibc's ``malloc_trim(0)``).

    Returns:
        Whether anything was asked (``False`` where the allocator has no such call).

    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


class PixelHold:
    """The pixels one call holds; :meth:`shrink_to` gives back what it no longer needs."""

    def __init__(self, budget: PixelBudget, pixels: int) -> None:
        self._budget = budget
        self.pixels = pixels

    def shrink_to(self, pixels: int) -> None:
        """Keep only ``pixels`` (no more than now held) and give the rest back at once."""
        if not 0 <= pixels <= self.pixels:
            raise ValueError(f"cannot shrink a hold of {self.pixels} pixels to {pixels}")
        freed, self.pixels = self.pixels - pixels, pixels
        self._budget._give(freed)


class PixelBudget:
    """An async semaphore counted in decoded pixels.

    Args:
        capacity: Pixels all holds together may reach (``max_inflight_pixels``).

    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.in_use = 0
        self.high_water = 0
        """The most pixels ever held at once."""
        self.waits = 0
        """How many holds had to wait for room."""
        self.trims = 0
        """How many times freed memory was handed back to the system."""
        self.trimmed = asyncio.Event()
        """Set once freed memory was handed back to the system."""
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._held_since_trim = 0
        self._trim_pending = False

    @asynccontextmanager
    async def hold(self, pixels: int, what: str) -> AsyncIterator[PixelHold]:
        """Hold ``pixels`` for the body of the ``async with``; wait for room first if needed.

        Args:
            pixels: Decoded pixels the caller will hold at most.
            what: What needs them (a tool name), for the error message.

        Yields:
            The hold; released on exit, whatever the exit (error and cancellation included).

        Raises:
            LimitExceededError: ``pixels`` is more than the whole budget: waiting would not help.

        """
        if pixels > self.capacity:
            raise LimitExceededError(
                f"{what} needs {pixels} decoded pixels at once, more than max_inflight_pixels {self.capacity}: "
                "use smaller images or fewer of them"
            )
        await self._take(pixels)
        hold = PixelHold(self, pixels)
        try:
            yield hold
        finally:
            self._give(hold.pixels)
            hold.pixels = 0

    async def _take(self, pixels: int) -> None:
        if not self._waiters and self.in_use + pixels <= self.capacity:
            self._grant(pixels)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (pixels, future)
        self._waiters.append(entry)
        self.waits += 1
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                # Granted just as the wait was cancelled: the pixels are ours to give back.
                self._give(pixels)
            else:
                # Gone already when a wake-up passed over the cancelled future.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                # A large waiter at the head may have been blocking smaller ones behind it.
                self._wake()
            raise

    def _grant(self, pixels: int) -> None:
        self.in_use += pixels
        self.high_water = max(self.high_water, self.in_use)
        self._held_since_trim = max(self._held_since_trim, self.in_use)

    def _give(self, pixels: int) -> None:
        self.in_use -= pixels
        self._wake()
        if self.in_use == 0 and self._held_since_trim >= _TRIM_AFTER_PIXELS and not self._trim_pending:
            self._trim_pending = True
            asyncio.get_running_loop().call_later(_TRIM_DELAY_S, self._trim_if_idle)

    def _wake(self) -> None:
        while self._waiters and self.in_use + self._waiters[0][0] <= self.capacity:
            pixels, future = self._waiters.popleft()
            if not future.done():
                self._grant(pixels)
                future.set_result(None)

    def _trim_if_idle(self) -> None:
        self._trim_pending = False
        # A new hold since the budget drained will drain again and schedule its own trim.
        if self.in_use == 0 and release_free_memory():
            self._held_since_trim = 0
            self.trims += 1
            self.trimmed.set()


class PixelLRU(Generic[_V]):
    """Values that hold pixels, by key, least recently used dropped first past ``max_pixels``.

    Thread-safe: the store fills it from worker threads and reads it on the event loop.

    Args:
        max_pixels: Most pixels kept in all; a single value over it is not kept (0 keeps none).

    """

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._items: OrderedDict[str, tuple[int, _V]] = OrderedDict()
        self._pixels = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> _V | None:
        """The value of ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, pixels: int, value: _V) -> None:
        """Keep ``value`` (replacing one of the same key), dropping the least recently used past the bound."""
        if pixels > self.max_pixels:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._pixels -= old[0]
            self._items[key] = (pixels, value)
            self._pixels += pixels
            while self._pixels > self.max_pixels:
                _, (dropped, _) = self._items.popitem(last=False)
                self._pixels -= dropped
