"""What ``visioncreator run`` writes into its ``--out`` folder, and nothing outside it.

Image handles come from the tool server, a peer that ``--tools-url`` may point anywhere: each
one is checked against the tool server's own handle pattern before it names a file, and every
path is built with :func:`~visioncreator.graph.folder.inside` as well, so a hostile handle such
as ``../../x`` is refused twice before a byte is written.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path

from visioncreator.graph.client import ToolClient
from visioncreator.graph.folder import PathEscapeError, inside
from visioncreator.graph.report import render_report
from visioncreator.graph.trajectory import Trajectory, image_handles
from visioncreator.tool_servers import HANDLE_PATTERN

__all__ = ["OutputFiles", "RunClock", "checked_handles", "write_outputs"]

_HANDLE = re.compile(HANDLE_PATTERN)


class RunClock:
    """The task's running time across resumes, kept in ``OUT/clock.json`` as the run goes.

    A resumed run starts from the time its thread's earlier runs recorded (a killed run's last
    progress event included), so ``timings.wall_s`` of the trajectory counts every run's time and
    never the time between a crash and its resume.

    Args:
        path: The clock file (``OUT/clock.json``).
        thread_id: The task's checkpoint thread: a file of another thread counts for nothing.
        resuming: Whether the checkpoint holds the thread already (a fresh start ignores the file).
    """

    _EVERY_S = 0.5

    def __init__(self, path: Path, *, thread_id: str, resuming: bool) -> None:
        self.path = path
        self.thread_id = thread_id
        self.earlier_s = self._read() if resuming else 0.0
        self._started = time.perf_counter()
        self._saved = 0.0

    def _read(self) -> float:
        try:
            data = json.loads(self.path.read_text())
            return float(data["wall_s"]) if data.get("thread_id") == self.thread_id else 0.0
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0.0

    @property
    def wall_s(self) -> float:
        """Seconds of every run of the thread so far, this one included."""
        return self.earlier_s + time.perf_counter() - self._started

    def tick(self, *, force: bool = False) -> float:
        """Save the time so far (at most every half second unless ``force``); that time, in ms steps."""
        now = time.perf_counter()
        wall_s = round(self.earlier_s + now - self._started, 3)
        if force or now - self._saved >= self._EVERY_S:
            self._saved = now
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps({"thread_id": self.thread_id, "wall_s": wall_s}))
            partial.replace(self.path)
        return wall_s


def checked_handles(handles: Iterable[str]) -> list[str]:
    """``handles`` unchanged, or :class:`PathEscapeError` naming the first one that is not a handle."""
    checked = []
    for handle in handles:
        if not isinstance(handle, str) or _HANDLE.fullmatch(handle) is None:
            raise PathEscapeError(
                f"the tool server returned {handle!r} as an image handle, which is not one "
                f"(expected 'img_' and 24 hex digits): refused, no image was saved"
            )
        checked.append(handle)
    return checked


class OutputFiles:
    """The files of one run under ``out``: ``images/<handle>.png``, ``image_N.png``, the record and the report.

    Args:
        out: The run's output folder (it exists: the run holds its lock).
    """

    def __init__(self, out: Path) -> None:
        self.out = out

    def image(self, handle: str) -> Path:
        """Where the image ``handle`` is saved."""
        return inside(self.out, "images", f"{checked_handles([handle])[0]}.png")

    def answer(self, index: int) -> Path:
        """Where the answer's ``index``-th image (from 1) is copied."""
        return inside(self.out, f"image_{index}.png")

    @property
    def trajectory(self) -> Path:
        """The trajectory record."""
        return inside(self.out, "trajectory.json")

    @property
    def clock(self) -> Path:
        """The running time of the task's runs so far (:class:`RunClock`)."""
        return inside(self.out, "clock.json")

    @property
    def report(self) -> Path:
        """The HTML report."""
        return inside(self.out, "report.html")


async def write_outputs(tools: ToolClient, trajectory: Trajectory, out: Path) -> list[str]:
    """Save every image the task saw or made, the answer, the trajectory and the report under ``out``.

    Every handle is checked before the first file is written, so a bad one leaves no partial output.

    Returns:
        The answer's image files, in order.

    Raises:
        PathEscapeError: The tool server gave a handle that is not one.
    """
    files = OutputFiles(out)
    seen = checked_handles(image_handles(trajectory.task, trajectory.tool_calls))
    answer = checked_handles(trajectory.answer)
    inside(out, "images").mkdir(exist_ok=True)
    for handle in seen:
        files.image(handle).write_bytes(await tools.read_image(handle))
    written = []
    for i, handle in enumerate(answer, 1):
        target = files.answer(i)
        target.write_bytes(files.image(handle).read_bytes())
        written.append(str(target))
    files.trajectory.write_text(trajectory.model_dump_json(indent=1))
    files.report.write_text(render_report(trajectory))
    return written
