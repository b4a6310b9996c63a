"""The synthetic back end through its ImageBackend interface."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from PIL import Image

from visioncreator.tool_servers.backend import Generated, ImageBackend, SourceImage
from visioncreator.tool_servers.scene import FaultType, GroundTruth
from visioncreator.tool_servers.schemas import (
    EditImageInput,
    InspectImageInput,
    ReferenceToImageInput,
    TextToImageInput,
)
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.checklist import checklist_for_edit, checklist_for_spec, verify
from visioncreator.tool_servers.synthetic.faults import ALL_FAULTS
from visioncreator.tool_servers.synthetic.items import CheckItem
from visioncreator.tool_servers.synthetic.prompt import parse_edit, parse_prompt

T = TypeVar("T")
PROMPT = 'three red apples to the left of a blue car and a dog, with the text "Open", in cartoon style'


async def _bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, timeout=10)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _source(generated: Generated, n: int = 1) -> SourceImage:
    return SourceImage(handle=f"img_{n:024x}", image=generated.image, truth=generated.truth)


def _truth(generated: Generated | SourceImage) -> GroundTruth:
    assert generated.truth is not None
    return generated.truth


async def _make(backend: SyntheticBackend, prompt: str = PROMPT, seed: int = 1, size: int = 256) -> Generated:
    args = TextToImageInput(prompt=prompt, width=size, height=size, seed=seed)
    return await _bounded(backend.text_to_image(args))


def test_is_an_image_backend() -> None:
    backend = SyntheticBackend()
    assert isinstance(backend, ImageBackend)
    assert backend.name == "synthetic"
    assert backend.settings == SyntheticSettings()


@pytest.mark.parametrize("options", [{"fault_rate": 1.5}, {"fault_rate": -0.1}, {"fault_types": ("melted",)}])
def test_settings_reject_bad_values(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="fault"):
        SyntheticSettings(**options)  # type: ignore[arg-type]


async def test_text_to_image_is_deterministic_and_true_to_the_prompt() -> None:
    backend = SyntheticBackend()
    first, again, other = await _make(backend), await _make(backend), await _make(backend, seed=2)
    assert _png(first.image) == _png(again.image)
    assert _png(first.image) != _png(other.image)
    truth = _truth(first)
    assert first.image.size == (256, 256)
    assert truth.requested == parse_prompt(PROMPT)
    assert (truth.tool, truth.prompt, truth.seed, truth.faults) == ("text_to_image", PROMPT, 1, ())
    assert all(r.passed for r in verify(checklist_for_spec(parse_prompt(PROMPT)), [truth.scene]))
    unseeded = await _bounded(backend.text_to_image(TextToImageInput(prompt="a cat", width=64, height=64)))
    assert unseeded.seed == 0


def test_images_do_not_depend_on_the_hash_seed() -> None:
    script = (
        "import asyncio, hashlib, io\n"
        "from visioncreator.tool_servers.schemas import TextToImageInput\n"
        "from visioncreator.tool_servers.synthetic.backend import SyntheticBackend\n"
        f"g = asyncio.run(SyntheticBackend().text_to_image(TextToImageInput(prompt={PROMPT!r}, seed=5)))\n"
        "buf = io.BytesIO(); g.image.save(buf, format='PNG'); print(hashlib.sha256(buf.getvalue()).hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1


async def test_fault_rate_matches_settings_and_faults_fail_checks() -> None:
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.3))
    items = checklist_for_spec(parse_prompt(PROMPT))
    faulted = 0
    for seed in range(500):
        truth = _truth(await _make(backend, seed=seed, size=128))
        if truth.faults:
            faulted += 1
            assert not all(r.passed for r in verify(items, [truth.scene])), truth.faults
    assert 0.23 <= faulted / 500 <= 0.37


async def test_only_allowed_fault_types_are_injected() -> None:
    backend = SyntheticBackend(SyntheticSettings(fault_rate=1.0, fault_types=("misspelled_text",)))
    for seed in range(20):
        truth = _truth(await _make(backend, seed=seed, size=128))
        assert [f.type for f in truth.faults] == ["misspelled_text"]
        assert truth.scene.text != "Open"


EDITS: list[tuple[str, FaultType, str]] = [
    ("make the car green", "wrong_color", "color"),
    ("add two cats to the right of the dog", "dropped_object", "count"),
    ("add two cats", "wrong_count", "count"),
    ("move the dog above the car", "swapped_position", "position"),
    ('change the text to "Closed"', "misspelled_text", "text"),
    ("make the car green", "identity_drift", "preserved"),
]


@pytest.mark.parametrize(("instruction", "fault", "check"), EDITS)
async def test_edit_image(instruction: str, fault: FaultType, check: str) -> None:
    source = _source(await _make(SyntheticBackend(), seed=3))
    source_scene = _truth(source).scene
    items = checklist_for_edit(parse_edit(instruction), source_scene=source_scene)
    for seed in range(8):
        args = EditImageInput(image=source.handle, instruction=instruction, seed=seed)
        clean = await _bounded(SyntheticBackend().edit_image(args, source))
        truth = _truth(clean)
        assert clean.image.size == source.image.size
        assert (truth.tool, truth.sources, truth.faults) == ("edit_image", (source.handle,), ())
        assert all(r.passed for r in verify(items, [truth.scene], [source_scene]))
        broken = SyntheticBackend(SyntheticSettings(fault_rate=1.0, fault_types=(fault,)))
        faulty = _truth(await _bounded(broken.edit_image(args, source)))
        assert [f.type for f in faulty.faults] == [fault]
        failed = {r.item.check for r in verify(items, [faulty.scene], [source_scene]) if not r.passed}
        assert check in failed, (faulty.faults, failed)


async def test_edit_of_an_uploaded_image_draws_over_its_pixels() -> None:
    photo = Image.new("RGB", (200, 160), (1, 2, 3))
    source = SourceImage(handle="img_" + "a" * 24, image=photo)
    args = EditImageInput(image=source.handle, instruction="add a red dog", seed=0)
    edited = await _bounded(SyntheticBackend().edit_image(args, source))
    truth = _truth(edited)
    assert edited.image.size == (200, 160)
    assert [(o.kind, o.color) for o in truth.scene.objects] == [("dog", "red")]
    assert edited.image.getpixel((0, 0)) == (1, 2, 3)
    x0, y0, x1, y1 = truth.scene.objects[0].box
    inside = {edited.image.getpixel((x, y)) for x in range(x0, x1) for y in range(y0, y1)}
    assert inside - {(1, 2, 3)}
    assert photo.getpixel((100, 80)) == (1, 2, 3)


async def test_reference_to_image_keeps_identity_unless_it_drifts() -> None:
    ref = await _make(SyntheticBackend(), prompt="a dog and a cat", seed=4)
    refs = [_source(ref)]
    items = [CheckItem(check="consistency", subject=k, reference=1) for k in ("dog", "cat")]
    for seed in range(10):
        args = ReferenceToImageInput(prompt="two dogs next to a cat on a bench", references=[refs[0].handle], seed=seed)
        made = _truth(await _bounded(SyntheticBackend().reference_to_image(args, refs)))
        assert made.sources == (refs[0].handle,)
        assert all(r.passed for r in verify(items, [made.scene, _truth(ref).scene]))
        drifting = SyntheticBackend(SyntheticSettings(fault_rate=1.0, fault_types=("identity_drift",)))
        drifted = _truth(await _bounded(drifting.reference_to_image(args, refs)))
        assert [f.type for f in drifted.faults] == ["identity_drift"]
        assert not all(r.passed for r in verify(items, [drifted.scene, _truth(ref).scene]))


async def test_inspect_image_answers_from_the_truth() -> None:
    backend = SyntheticBackend()
    made = await _make(backend)
    questions = [
        "How many apples are there?",
        "What colour is the car?",
        "Is there a dog?",
        "Is there a giraffe?",
        "What text is written?",
        "How many zebras?",
        "Why is the sky blue?",
    ]
    args = InspectImageInput(image="img_" + "0" * 24, questions=questions)
    result = await _bounded(backend.inspect_image(args, _source(made)))
    assert result.known
    assert result.counts == {"apple": 3, "car": 1, "dog": 1}
    assert (result.style, result.text, result.width) == ("cartoon", "Open", 256)
    assert len(result.objects) == 5
    assert [a.answer for a in result.answers] == ["3", "blue", "yes", "no", "Open", "0", "unknown"]


async def test_inspect_image_without_truth_is_unknown() -> None:
    backend = SyntheticBackend()
    source = SourceImage(handle="img_" + "b" * 24, image=Image.new("RGB", (96, 64)))
    args = InspectImageInput(image=source.handle, questions=["how many dogs?"])
    result = await _bounded(backend.inspect_image(args, source))
    assert not result.known
    assert (result.objects, result.counts, result.style, result.width, result.height) == ([], {}, "photo", 96, 64)
    assert result.answers[0].answer == "unknown"


def test_all_fault_types_are_allowed_by_default() -> None:
    assert set(ALL_FAULTS) == set(SyntheticSettings().fault_types)


async def test_common_random_numbers_whether_a_call_is_faulted_does_not_depend_on_the_prompt() -> None:
    """Calls with the same seed and tool share the fault decision; the fault itself follows the prompt."""
    prompts = ("three red apples and a blue car", "two green dogs next to a yellow bench")
    faulted: dict[int, set[int]] = {}
    types_differ = 0
    for tool_seed in (0, 7):
        backend = SyntheticBackend(SyntheticSettings(fault_rate=0.4, tool_seed=tool_seed))
        faulted[tool_seed] = set()
        for seed in range(120):
            a, b = [_truth(await _make(backend, prompt=p, seed=seed, size=128)) for p in prompts]
            # Both prompts always have something to break, so a decided fault always lands.
            assert bool(a.faults) == bool(b.faults), seed
            if a.faults:
                faulted[tool_seed].add(seed)
                types_differ += a.faults[0].type != b.faults[0].type
    assert all(30 <= len(seeds) <= 66 for seeds in faulted.values())
    assert faulted[0] != faulted[7]  # the server's seed still varies the dice
    assert types_differ > 0
