"""Relative positions follow compositional benchmarks: the dominant axis decides the direction."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import get_args

import pytest

from visioncreator.evals import InputImage, load_suite
from visioncreator.tool_servers.backend import SourceImage
from visioncreator.tool_servers.scene import Box, Relation, Scene
from visioncreator.tool_servers.schemas import EditImageInput, TextToImageInput
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.checklist import verify
from visioncreator.tool_servers.synthetic.geometry import relation_holds

W = H = 512


def _at(x: float, y: float, half: int = 40) -> Box:
    return (round(x) - half, round(y) - half, round(x) + half, round(y) + half)


def _holding(a: Box, b: Box) -> set[Relation]:
    return {r for r in get_args(Relation) if r != "next_to" and relation_holds(a, b, r, W, H)}


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ((-200, 0), {"left_of"}),
        ((200, 30), {"right_of"}),
        ((0, -200), {"above"}),
        ((-30, 200), {"below"}),
        # Diagonal: the larger offset decides, as GenEval judges it.
        ((-150, -250), {"above"}),
        ((-250, 150), {"left_of"}),
        ((150, 200), {"below"}),
        # Too close along the dominant axis to be in any direction.
        ((10, 5), set()),
        ((0, 0), set()),
        # Exactly diagonal: neither axis dominates.
        ((-200, -200), set()),
    ],
)
def test_the_dominant_axis_decides_the_direction(offset: tuple[int, int], expected: set[Relation]) -> None:
    a, b = _at(256 + offset[0], 256 + offset[1]), _at(256, 256)
    assert _holding(a, b) == expected


def test_a_diagonal_layout_is_not_left_of() -> None:
    # The old rule took this for left_of (a centre gap of 5% of the width, a vertical offset under half the height).
    apple, bowl = _at(100, 100), _at(250, 340)
    assert not relation_holds(apple, bowl, "left_of", W, H)
    assert relation_holds(apple, bowl, "above", W, H)
    assert relation_holds(bowl, apple, "below", W, H)


def test_at_most_one_direction_holds_and_opposites_mirror() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        a = _at(rng.uniform(40, 472), rng.uniform(40, 472), rng.randint(2, 40))
        b = _at(rng.uniform(40, 472), rng.uniform(40, 472), rng.randint(2, 40))
        holding = _holding(a, b)
        assert len(holding) <= 1
        mirrored = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
        assert _holding(b, a) == {mirrored[r] for r in holding}


def _panels(request: str, n_images: int) -> list[str]:
    if n_images == 1:
        return [request]
    return [p.strip() for p in request.split(":", 1)[1].split(";")]


async def _scenes(
    backend: SyntheticBackend, task_inputs: Sequence[InputImage], prompts: list[str], seed: int
) -> tuple[list[Scene], list[Scene]]:
    """The scenes the environment makes for a task's prompts (or its edit of its input), and its inputs' scenes."""
    if not task_inputs:
        made = [await backend.text_to_image(TextToImageInput(prompt=p, width=W, height=H, seed=seed)) for p in prompts]
        return [m.truth.scene for m in made if m.truth is not None], []
    image = task_inputs[0]
    assert image.prompt is not None
    source = await backend.text_to_image(TextToImageInput(prompt=image.prompt, seed=image.seed))
    handle = "img_" + "0" * 24
    edited = await backend.edit_image(
        EditImageInput(image=handle, instruction=prompts[0], seed=seed),
        SourceImage(handle, source.image, source.truth),
    )
    assert edited.truth is not None
    assert source.truth is not None
    return [edited.truth.scene], [source.truth.scene]


async def test_the_built_in_suite_gets_its_positions_at_fault_rate_0() -> None:
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
    tasks = [t for t in load_suite() if any(i.check == "position" for i in t.checklist)]
    assert len(tasks) >= 10
    for task in tasks:
        items = [i for i in task.checklist if i.check == "position"]
        for seed in range(4):
            outputs, inputs = await asyncio.wait_for(
                _scenes(backend, task.inputs, _panels(task.request, task.n_images), seed), timeout=30
            )
            results = verify(items, outputs, inputs)
            assert all(r.passed for r in results), (task.id, seed, results)
