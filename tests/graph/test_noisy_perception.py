"""The scripted expert reflects on inspections: with the observer's noise on it makes perception mistakes."""

from __future__ import annotations

from pathlib import Path

import anyio

from tests.graph.conftest import make_client
from visioncreator.graph import TaskRunner, expert_policy
from visioncreator.policy import Task
from visioncreator.tool_servers.synthetic import ObserverSettings

REQUESTS = [
    'three red apples to the left of a blue car, with the text "Open"',
    'two green dogs and a yellow bench, with the text "PARK"',
    "four purple cups above an orange table",
    "a white cat next to two brown horses",
]


async def _mistakes(store: Path, observer: ObserverSettings, runs: int) -> tuple[int, int, int]:
    """Reflections that saw no fault in a faulty image, that saw one in a good image, and all reflections.

    What the expert saw is the fault list it wrote; its verdict also depends on its redo budget.
    """
    missed = flagged_good = total = 0
    async with make_client(store, fault_rate=0.5, observer=observer) as tools:
        runner = TaskRunner(policy=expert_policy(), tools=tools)
        for i in range(runs):
            with anyio.fail_after(60):
                trajectory = (await runner.run(Task(request=REQUESTS[i % len(REQUESTS)]), seed=i)).trajectory
            for turn in trajectory.turns:
                for reflection in turn.parsed.reflections:
                    truth = trajectory.truths.get(reflection.image or "")
                    if truth is None:
                        continue
                    faulty = bool(truth["faults"])
                    total += 1
                    missed += faulty and not reflection.faults
                    flagged_good += not faulty and bool(reflection.faults)
    return missed, flagged_good, total


async def test_exact_perception_reflects_right_and_noisy_perception_sometimes_wrong(tmp_path: Path) -> None:
    exact = await _mistakes(tmp_path / "exact", ObserverSettings.exact(), runs=24)
    assert exact[:2] == (0, 0)
    assert exact[2] >= 24
    noisy = await _mistakes(tmp_path / "noisy", ObserverSettings(miss_rate=0.15, color_rate=0.15, ocr_rate=0.3), 24)
    assert noisy[0] + noisy[1] >= 2, noisy
