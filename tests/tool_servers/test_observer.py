"""Perception that can be wrong: the synthetic observer behind inspect_image, and where it is set."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import pytest

from visioncreator.tool_servers.backend import Generated, SourceImage
from visioncreator.tool_servers.cli import _parser, _settings
from visioncreator.tool_servers.scene import Scene, SceneObject
from visioncreator.tool_servers.schemas import InspectImageInput, InspectResult, TextToImageInput
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.synthetic import ObserverSettings, SyntheticBackend, SyntheticSettings, critique
from visioncreator.tool_servers.synthetic.backend import stable_rng
from visioncreator.tool_servers.synthetic.observer import observe
from visioncreator.tool_servers.tools import default_backend

EXACT = ObserverSettings.exact()
PROMPTS = [
    'three red apples to the left of a blue car, with the text "Open"',
    'two green dogs and a yellow bench, with the text "PARK"',
    "four purple cups above an orange table",
    "a white cat next to two brown horses",
]


def _scene(n: int = 40, text: str | None = "Hello World") -> Scene:
    kinds = ("apple", "dog", "cup", "car")
    objects = tuple(
        SceneObject(
            id=i, kind=kinds[i % 4], color="red", box=(i, i, i + 20, i + 20), identity=f"{kinds[i % 4]}:red:plain"
        )
        for i in range(n)
    )
    return Scene(width=512, height=512, objects=objects, text=text)


async def _inspect(backend: SyntheticBackend, generated: Generated, handle: str) -> InspectResult:
    source = SourceImage(handle=handle, image=generated.image, truth=generated.truth)
    questions = ["how many apples are there?", "what colour is the car?", "what does the text say?"]
    return await asyncio.wait_for(
        backend.inspect_image(InspectImageInput(image=handle, questions=questions), source), 10
    )


def _handle(i: int) -> str:
    return f"img_{i:024x}"


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"miss_rate": 1.5}, ValueError, "miss_rate must be within"),
        ({"count_rate": -0.1}, ValueError, "count_rate must be within"),
        ({"color_rate": float("nan")}, ValueError, "color_rate must be within"),
        ({"ocr_rate": "0.1"}, TypeError, "ocr_rate must be a number"),
        ({"miss_rate": True}, TypeError, "miss_rate must be a number"),
    ],
)
def test_settings_reject_bad_rates_by_name(options: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ObserverSettings(**options)


def test_defaults_are_moderate_and_on_and_everywhere_the_same() -> None:
    defaults = ObserverSettings()
    rates = dataclasses.astuple(defaults)
    assert all(0.0 < r <= 0.1 for r in rates)
    assert not defaults.is_exact
    assert EXACT.is_exact
    assert SyntheticSettings().observer == defaults
    server = ServerSettings()
    served = (server.observe_miss_rate, server.observe_count_rate, server.observe_color_rate, server.observe_ocr_rate)
    assert served == (defaults.miss_rate, defaults.count_rate, defaults.color_rate, defaults.ocr_rate)
    with pytest.raises(TypeError, match="ObserverSettings"):
        SyntheticSettings(observer={"miss_rate": 0.1})  # type: ignore[arg-type]


def test_cli_flags_reach_the_backend_observer() -> None:
    flags = ["--observe-miss-rate", "0.2", "--observe-count-rate", "0", "--observe-color-rate", "0.3"]
    options = _parser().parse_args([*flags, "--observe-ocr-rate", "1", "--store", "/tmp/unused", "--tool-seed", "4"])
    backend = default_backend(_settings(options))
    assert isinstance(backend, SyntheticBackend)
    assert backend.settings.observer == ObserverSettings(miss_rate=0.2, count_rate=0.0, color_rate=0.3, ocr_rate=1.0)
    assert backend.settings.tool_seed == 4
    plain = default_backend(_settings(_parser().parse_args(["--store", "/tmp/unused"])))
    assert isinstance(plain, SyntheticBackend)
    assert plain.settings.observer == ObserverSettings()


def test_exact_observer_returns_the_scene_itself() -> None:
    scene = _scene()
    assert observe(scene, random.Random(0), EXACT) is scene


@pytest.mark.parametrize("kind", ["miss_rate", "count_rate", "color_rate", "ocr_rate"])
def test_each_rate_is_calibrated_and_alone(kind: str) -> None:
    settings = dataclasses.replace(EXACT, **{kind: 0.2})
    truth = _scene()
    missed = doubled = merged = recoloured = misread = 0
    trials = 300
    for seed in range(trials):
        seen = observe(truth, random.Random(seed), settings)
        assert [o.id for o in seen.objects] == list(range(len(seen.objects)))
        per_kind = {k: sum(o.kind == k for o in seen.objects) for k in ("apple", "dog", "cup", "car")}
        if kind == "miss_rate":
            missed += len(truth.objects) - len(seen.objects)
        if kind == "count_rate":
            doubled += sum(max(0, n - 10) for n in per_kind.values())
            merged += sum(max(0, 10 - n) for n in per_kind.values())
            assert all(abs(n - 10) <= 1 for n in per_kind.values())
        recoloured += sum(o.color != "red" for o in seen.objects)
        for o in seen.objects:
            assert o.identity == f"{o.kind}:{o.color}:plain"
        if seen.text != truth.text:
            assert seen.text is not None
            assert len(seen.text) == len(truth.text or "")
            assert sum(a != b for a, b in zip(seen.text, truth.text or "", strict=True)) == 1
            misread += 1
        if kind != "miss_rate" and kind != "count_rate":
            assert len(seen.objects) == len(truth.objects)
    if kind == "miss_rate":
        assert 0.17 <= missed / (trials * 40) <= 0.23
    if kind == "count_rate":
        assert 0.15 <= (doubled + merged) / (trials * 4) <= 0.25
        assert doubled
        assert merged
    assert (kind == "color_rate") == (recoloured > 0)
    if kind == "color_rate":
        assert 0.17 <= recoloured / (trials * 40) <= 0.23
    assert (kind == "ocr_rate") == (misread > 0)
    if kind == "ocr_rate":
        assert 0.13 <= misread / trials <= 0.27


def test_colours_are_confused_with_near_ones_and_letters_with_look_alikes() -> None:
    settings = dataclasses.replace(EXACT, color_rate=1.0, ocr_rate=1.0)
    seen_colors: set[str] = set()
    for seed in range(50):
        seen = observe(_scene(n=4, text="O"), random.Random(seed), settings)
        seen_colors |= {o.color for o in seen.objects}
        assert seen.text in ("Q", "D", "C")
    assert seen_colors == {"maroon", "brown"}  # the two nearest to red in RGB


def test_a_duplicate_detection_keeps_the_centre_so_positions_do_not_change() -> None:
    settings = dataclasses.replace(EXACT, count_rate=1.0)
    truth = _scene(n=1, text=None)
    seen = observe(truth, random.Random(0), settings)
    original, double = seen.objects
    assert double.box != original.box
    assert (double.box[0] + double.box[2], double.box[1] + double.box[3]) == (
        original.box[0] + original.box[2],
        original.box[1] + original.box[3],
    )


def test_one_rate_does_not_move_the_others_mistakes() -> None:
    truth = _scene()
    with_misses = dataclasses.replace(EXACT, ocr_rate=0.5, miss_rate=0.5)
    ocr_only = dataclasses.replace(EXACT, ocr_rate=0.5)
    for seed in range(40):
        assert (
            observe(truth, random.Random(seed), with_misses).text == observe(truth, random.Random(seed), ocr_only).text
        )


async def test_inspection_is_noisy_reproducible_and_the_truth_stays_exact() -> None:
    noisy = SyntheticBackend(SyntheticSettings(observer=ObserverSettings(miss_rate=0.3, ocr_rate=0.5)))
    exact = SyntheticBackend(SyntheticSettings(observer=EXACT))
    reseeded = SyntheticBackend(SyntheticSettings(observer=ObserverSettings(miss_rate=0.3, ocr_rate=0.5), tool_seed=9))
    differing = differing_seeds = 0
    for i, prompt in enumerate(PROMPTS * 5):
        args = TextToImageInput(prompt=prompt, width=256, height=256, seed=i)
        made = await noisy.text_to_image(args)
        assert made.truth == (await exact.text_to_image(args)).truth  # stored truth: no noise
        assert made.truth is not None
        truth = made.truth.scene
        assert (await _inspect(exact, made, _handle(i))).objects == list(truth.objects)
        first, again = await _inspect(noisy, made, _handle(i)), await _inspect(noisy, made, _handle(i))
        assert first == again
        other = await _inspect(reseeded, made, _handle(i))
        differing_seeds += other.model_dump() != first.model_dump()
        if first.objects != list(truth.objects) or first.text != truth.text:
            differing += 1
        # Everything inspect reports comes from the one observed scene.
        assert first.counts == {k: sum(o.kind == k for o in first.objects) for k in {o.kind for o in first.objects}}
        assert first.answers[0].answer == str(first.counts.get("apple", 0))
        assert first.answers[2].answer == (first.text or "none")
        assert made.truth.scene == truth
    assert differing >= 5
    assert differing_seeds >= 5


async def test_noise_makes_the_critic_miss_faults_and_flag_good_images() -> None:
    """The expert's critic reads inspections: exact ones it judges right, noisy ones sometimes wrong."""
    settings = SyntheticSettings(fault_rate=0.5, observer=EXACT)
    exact = SyntheticBackend(settings)
    noisy = SyntheticBackend(dataclasses.replace(settings, observer=ObserverSettings()))
    wrong = {"exact": [0, 0], "noisy": [0, 0]}  # [faults missed, good images flagged]
    for i in range(240):
        prompt = PROMPTS[i % len(PROMPTS)]
        made = await exact.text_to_image(TextToImageInput(prompt=prompt, width=256, height=256, seed=i))
        assert made.truth is not None
        for name, backend in (("exact", exact), ("noisy", noisy)):
            seen = await _inspect(backend, made, _handle(i))
            flagged = bool(critique(goal=prompt, tool="text_to_image", inspection=seen.model_dump()))
            faulty = bool(made.truth.faults)
            wrong[name][0] += faulty and not flagged
            wrong[name][1] += flagged and not faulty
    assert wrong["exact"] == [0, 0]
    missed, flagged_good = wrong["noisy"]
    assert missed >= 1
    assert flagged_good >= 5
    assert flagged_good <= 60  # moderate: most good images still pass


def test_stable_rng_keys_the_observation_by_salt_and_handle() -> None:
    a = stable_rng("inspect_image", _handle(1)).random()
    assert a == stable_rng("inspect_image", _handle(1)).random()
    assert a != stable_rng("tool_seed", 3, "inspect_image", _handle(1)).random()
