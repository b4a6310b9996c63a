"""Progress of long commands (``eval``, ``collect``, ``train``) on stderr, and ``run``'s event lines.

On a terminal: a bar with the rate and the time left (tqdm, the ``evals`` extra; else rich if it
is installed). Anywhere else (a log file, a pipe, CI): plain lines, each with the count, the rate
and the time left, at most one every ``every_s`` seconds and always the last one, so a log stays
readable and a script can follow it.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

__all__ = ["Progress", "event_printer", "format_eta"]


def format_eta(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` or ``M:SS``, like tqdm's remaining time."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts work done out of ``total`` and shows it: a bar on a terminal, plain lines otherwise.

    Args:
        total: How many units the work has.
        desc: What the work is, first on each line (``eval``, ``collect``, a stage name).
        unit: The unit's name (``task``, ``traj``, ``step``).
        stream: Where to write (default: stderr, looked up when the progress starts).
        enabled: False shows nothing (``--quiet``).
        bar: Force the bar (True) or plain lines (False); default: a bar when ``stream`` is a terminal.
        every_s: Plain lines: the least time between two lines (the last one is always written).
        initial: Units already done before this run (a resumed job): counted, but not in the rate.
        started_at: When the work began (``time.perf_counter()``); default: now.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "it",
        stream: TextIO | None = None,
        enabled: bool = True,
        bar: bool | None = None,
        every_s: float = 1.0,
        initial: int = 0,
        started_at: float | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.every_s = every_s
        self.done = initial
        self._initial = initial
        self._started = time.perf_counter() if started_at is None else started_at
        self._last_line = -float("inf")
        self._status: dict[str, Any] = {}
        self._bar: Any = None
        self._rich: Any = None
        if enabled and (bar if bar is not None else _is_terminal(self.stream)):
            self._open_bar()

    @property
    def is_bar(self) -> bool:
        """Whether a bar (tqdm or rich) is drawn rather than plain lines."""
        return self._bar is not None or self._rich is not None

    def _open_bar(self) -> None:
        try:
            tqdm = importlib.import_module("tqdm").tqdm  # untyped; an optional extra, imported late
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(
                total=self.total, initial=self.done, desc=self.desc, unit=self.unit, file=self.stream,
                dynamic_ncols=True,
            )  # fmt: skip
            return
        try:
            rich_progress = importlib.import_module("rich.progress")
            rich_console = importlib.import_module("rich.console")
        except ImportError:
            return  # neither is installed: plain lines
        columns = (
            rich_progress.TextColumn("{task.description}"),
            rich_progress.BarColumn(),
            rich_progress.MofNCompleteColumn(),
            rich_progress.TextColumn("{task.fields[rate]}"),
            rich_progress.TimeRemainingColumn(),
            rich_progress.TextColumn("{task.fields[status]}"),
        )
        self._rich = rich_progress.Progress(*columns, console=rich_console.Console(file=self.stream))
        self._rich.start()
        self._rich_task = self._rich.add_task(
            self.desc, total=self.total, completed=self.done, rate="", status=""
        )  # fmt: skip

    def rate(self) -> float:
        """Units per second in this run (0 before the first)."""
        elapsed = time.perf_counter() - self._started
        ran = self.done - self._initial
        return ran / elapsed if ran > 0 and elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None before the first unit."""
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 else None

    def summary(self) -> str:
        """``DESC: N/TOTAL UNIT(s) (P%), R UNIT/s, ETA M:SS[, k=v ...]``: the plain line."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = self.eta_s()
        timing = f", {self.rate():.2f} {self.unit}/s, ETA {format_eta(eta)}" if eta is not None else ""
        status = "".join(f", {key} {value}" for key, value in self._status.items())
        return f"{self.desc}: {self.done}/{self.total} {self.unit}(s){pct}{timing}{status}"

    def update(self, n: int = 1, *, status: Mapping[str, Any] | None = None) -> None:
        """Count ``n`` more units done; ``status`` (e.g. ``{"success": "3/4"}``) is shown beside them."""
        self.done += n
        if status is not None:
            self._status = dict(status)
        if not self.enabled:
            return
        if self._bar is not None:
            if status is not None:
                self._bar.set_postfix(self._status, refresh=False)
            self._bar.update(n)
        elif self._rich is not None:
            rate = f"{self.rate():.2f} {self.unit}/s"
            shown = " ".join(f"{key} {value}" for key, value in self._status.items())
            self._rich.update(self._rich_task, advance=n, rate=rate, status=shown)
        else:
            now = time.perf_counter()
            if now - self._last_line >= self.every_s or self.done >= self.total:
                self._last_line = now
                print(self.summary(), file=self.stream, flush=True)

    def write(self, line: str) -> None:
        """Print ``line`` above the bar (or as a plain line)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        elif self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar (plain lines need nothing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: no bar
        return False


def event_printer(stream: TextIO) -> Callable[[dict[str, Any]], None]:
    """A ``visioncreator run`` progress handler: one line on ``stream`` per turn, tool call, reflection, resume."""

    def show(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            line = f"task: {event['request']!r} ({event['split']}, {event['n_images']} image(s))"
        elif kind == "resume":
            line = _resumed_line(event)
        elif kind == "turn":
            errors = f", {event['errors']} format error(s)" if event.get("errors") else ""
            line = f"[{event['node']}] turn {event['index']}{errors}"
        elif kind == "tool_end":
            result = event["handle"] if event.get("ok") else f"error: {event.get('error')}"
            line = f"  [{event['id']}] {event['name']} -> {result} ({event['latency_s'] * 1000:.0f} ms)"
        elif kind == "reflect":
            faults = f": {'; '.join(event['faults'])}" if event.get("faults") else ""
            line = f"  reflect {event['verdict']} {event.get('image') or ''}{faults}"
        elif kind == "tool_server_lost":
            line = f"tool server lost: {event['error']}; reconnecting and resuming ({event['reconnect']}/{event['of']})"
        elif kind == "finish":
            line = f"[finish] {event['termination']}: {', '.join(event['answer']) or '(no images)'}"
        else:
            return
        print(line, file=stream, flush=True)

    return show


def _resumed_line(event: dict[str, Any]) -> str:
    done = f"{event.get('turns', 0)} turn(s) and {event.get('tool_calls', 0)} tool call(s) done"
    where = f"thread {event['thread_id']} from checkpoint step {event.get('step')} ({done})"
    if event.get("finished"):
        return f"resumed {where}: the task had already finished; writing its outputs again"
    return f"resumed {where}; next: {', '.join(event['next'])}"
