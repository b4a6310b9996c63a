"""The diffusers back end on the tiny random pipelines: the real loading and pipeline code on a CPU."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image
from tests.tool_servers.diffusion.conftest import eventually

from visioncreator.tool_servers.backend import Generated, ImageBackend, SourceImage
from visioncreator.tool_servers.diffusion import (
    DiffusersBackend,
    DiffusionSettings,
    ModelNotAvailableError,
    make_backend,
)
from visioncreator.tool_servers.diffusion.tiny import build_tiny, tiny_registry_path
from visioncreator.tool_servers.errors import LimitExceededError
from visioncreator.tool_servers.schemas import (
    EditImageInput,
    InspectImageInput,
    ReferenceToImageInput,
    TextToImageInput,
)

pytestmark = pytest.mark.diffusers

HANDLE = "img_" + "0" * 24


@pytest.fixture
async def backend(tiny_cache: Path) -> AsyncIterator[DiffusersBackend]:
    made = make_backend("tiny", DiffusionSettings(cache_dir=tiny_cache, max_steps=1000, batch_wait_ms=50))
    assert isinstance(made, DiffusersBackend)
    yield made
    await made.aclose()


def _t2i(seed: int, width: int = 64, height: int = 64, **extra: Any) -> TextToImageInput:
    return TextToImageInput.model_validate(
        {"prompt": "a red fox", "width": width, "height": height, "seed": seed, **extra}
    )


def _pixels(generated: Generated) -> np.ndarray:
    return np.asarray(generated.image, dtype=np.int16)


def _source(width: int, height: int, colour: str = "orange") -> SourceImage:
    return SourceImage(handle=HANDLE, image=Image.new("RGB", (width, height), colour))


async def test_it_is_an_image_backend_named_tiny(backend: DiffusersBackend) -> None:
    assert isinstance(backend, ImageBackend)
    assert backend.name == "tiny"
    assert backend.missing_models() == {}


async def test_text_to_image_makes_the_asked_size_and_seeds_reproduce(backend: DiffusersBackend) -> None:
    with anyio.fail_after(60):
        first = await backend.text_to_image(_t2i(7, 128, 96))
        again = await backend.text_to_image(_t2i(7, 128, 96))
        other = await backend.text_to_image(_t2i(8, 128, 96))
    assert first.image.size == (128, 96)
    assert first.image.mode == "RGB"
    assert first.seed == 7
    assert first.truth is None
    assert np.array_equal(_pixels(first), _pixels(again))
    assert not np.array_equal(_pixels(first), _pixels(other))


async def test_concurrent_requests_share_one_call_and_keep_their_own_seeds(backend: DiffusersBackend) -> None:
    with anyio.fail_after(60):
        batched = await asyncio.gather(*(backend.text_to_image(_t2i(seed)) for seed in (1, 2, 3, 1)))
    assert backend.stats.batch_sizes == [4]
    assert [g.seed for g in batched] == [1, 2, 3, 1]
    # The seed, not the batch, decides the image, up to float rounding: a batch's rows may take
    # different kernel paths, so the same seed can differ by a level or two here and there.
    assert np.abs(_pixels(batched[0]) - _pixels(batched[3])).max() <= 2
    assert np.abs(_pixels(batched[0]) - _pixels(batched[1])).mean() > 10
    with anyio.fail_after(60):
        alone = await backend.text_to_image(_t2i(2))
    assert np.abs(_pixels(alone) - _pixels(batched[1])).max() <= 2


async def test_requests_that_cannot_share_a_call_run_apart(backend: DiffusersBackend) -> None:
    with anyio.fail_after(60):
        results = await asyncio.gather(
            backend.text_to_image(_t2i(1, 64, 64)),
            backend.text_to_image(_t2i(1, 64, 128)),
            backend.text_to_image(_t2i(1, 64, 64, steps=2)),
        )
    assert sorted(backend.stats.batch_sizes) == [1, 1, 1]
    assert [g.image.size for g in results] == [(64, 64), (64, 128), (64, 64)]


async def test_edit_image_keeps_the_source_size_fitted_to_the_model(backend: DiffusersBackend) -> None:
    args = EditImageInput(image=HANDLE, instruction="make it blue", seed=3)
    with anyio.fail_after(60):
        edited = await backend.edit_image(args, _source(100, 70))
        again = await backend.edit_image(args, _source(100, 70))
        from_other = await backend.edit_image(args, _source(100, 70, "navy"))
    assert edited.image.size == (96, 64)  # multiples of 16, the tiny model's multiple_of
    assert np.array_equal(_pixels(edited), _pixels(again))
    assert not np.array_equal(_pixels(edited), _pixels(from_other))  # the source conditions the edit


@pytest.mark.parametrize("count", [1, 2, 3, 4])
async def test_reference_to_image_takes_one_to_four_references(backend: DiffusersBackend, count: int) -> None:
    args = ReferenceToImageInput(prompt="the same fox", references=[HANDLE] * count, width=96, height=64, seed=5)
    references = [_source(64, 64, colour) for colour in ("red", "green", "blue", "white")[:count]]
    with anyio.fail_after(60):
        made = await backend.reference_to_image(args, references)
        from_other = await backend.reference_to_image(args, [_source(64, 64, "black")] * count)
    assert made.image.size == (96, 64)
    assert not np.array_equal(_pixels(made), _pixels(from_other))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"width": 100}, "width 100 is not a multiple of 16"),
        ({"width": 1024}, "width 1024 exceeds max_width 768 of model tiny-text"),
        ({"height": 784}, "height 784 exceeds max_height 768 of model tiny-text"),
        ({"guidance": 12.5}, "guidance 12.5 exceeds max_guidance 10 of model tiny-text"),
    ],
)
async def test_arguments_outside_the_models_limits_fail_before_any_work(
    backend: DiffusersBackend, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(LimitExceededError, match=message):
        await backend.text_to_image(_t2i(1, **extra))
    assert backend.stats.batches == 0


async def test_the_servers_step_limit_applies_too(tiny_cache: Path) -> None:
    backend = make_backend("tiny", DiffusionSettings(cache_dir=tiny_cache, max_steps=10))
    assert isinstance(backend, DiffusersBackend)
    with pytest.raises(LimitExceededError, match="steps 11 exceeds the server's max_steps 10"):
        await backend.text_to_image(_t2i(1, steps=11))


async def test_cancelling_a_request_stops_the_pipeline_not_only_the_wait(backend: DiffusersBackend) -> None:
    await anyio.to_thread.run_sync(backend.warm_up, ["text_to_image"])
    task = asyncio.create_task(backend.text_to_image(_t2i(1, steps=1000)))
    with anyio.fail_after(30):
        await eventually(lambda: backend.stats.steps >= 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: backend.stats.cancelled >= 1)
    assert backend.stats.images == 0
    assert backend.stats.steps < 100, f"{backend.stats.steps} of 1000 steps ran after the cancel"


async def test_inspect_image_reports_the_size_of_a_real_image(backend: DiffusersBackend) -> None:
    with anyio.fail_after(60):
        result = await backend.inspect_image(InspectImageInput(image=HANDLE, questions=[]), _source(80, 48))
    assert (result.handle, result.width, result.height) == (HANDLE, 80, 48)
    assert result.objects == []


async def test_a_registry_model_missing_from_disk_fails_fast_and_says_so(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text('[models.sd-turbo]\npipeline = "StableDiffusionPipeline"\nsource = "./not-downloaded"\n')
    backend = make_backend("diffusers", DiffusionSettings(registry=registry))
    assert isinstance(backend, DiffusersBackend)
    assert "sd-turbo" in backend.missing_models()
    with anyio.fail_after(10), pytest.raises(ModelNotAvailableError, match=r"model sd-turbo: .*not-downloaded"):
        await backend.text_to_image(_t2i(1, 256, 256))
    await backend.aclose()


def test_the_tiny_pipelines_are_built_once_and_reused(tiny_cache: Path) -> None:
    registry = tiny_registry_path(tiny_cache)
    stamp = registry.stat().st_mtime_ns
    assert build_tiny(tiny_cache) == registry
    assert registry.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in registry.parent.iterdir()) == ["edit", "registry.toml", "text"]
