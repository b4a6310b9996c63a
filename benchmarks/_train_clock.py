"""Training time of the learning benchmark's phases (:mod:`rl_learning`): CPU over threads, and wall."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Clock", "add_chunk"]


class Clock:
    """Training time of a phase: the process's CPU seconds over the torch threads, and the wall time.

    Budgets and the control's matching use the CPU measure, so a machine shared with other work
    neither shrinks GRPO's budget nor skews the control; on a quiet machine with every thread busy
    it equals the wall time. Both go into ``chunks.json``. (A SIGSTOP is safe only in the SFT
    phases: a GRPO or evaluation turn in flight passes its 300 s timeout.)
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def elapsed(self) -> dict[str, float]:
        cpu = (time.process_time() - self.cpu0) / self.threads
        return {"cpu_s": cpu, "wall_s": time.perf_counter() - self.wall0}


def add_chunk(state: dict[str, Any], chunk: dict[str, Any]) -> None:
    """Record a finished chunk (``Clock.elapsed`` in it) and add its times to the stage's totals."""
    state["chunks"].append(chunk)
    state["train_s"] += chunk["cpu_s"]
    state["train_wall_s"] = state.get("train_wall_s", 0.0) + chunk["wall_s"]
