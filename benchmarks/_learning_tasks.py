"""The learning benchmarks' training tasks: single-image tasks of other suite seeds, none equal to a held-out one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


def disjoint_training_tasks(held_requests: Iterable[str], n: int) -> list[Any]:
    """``n`` single-image tasks of ``build_synthetic_suite`` at seeds 1, 2, ... (ids renamed), no request repeated."""
    from visioncreator.evals import build_synthetic_suite

    seen = set(held_requests)
    tasks: list[Any] = []
    seed = 1
    while len(tasks) < n:
        for t in asyncio.run(build_synthetic_suite(per_split=40, seed=seed)):
            if t.split == "single" and t.request not in seen and len(tasks) < n:
                tasks.append(t.model_copy(update={"id": f"train-s{seed}-{t.id}"}))
                seen.add(t.request)
        seed += 1
    return tasks
