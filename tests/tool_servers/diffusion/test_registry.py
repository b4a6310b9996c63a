"""The model registry: packaged defaults, user overrides, limits, and the offline model check (no torch)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from visioncreator.tool_servers.diffusion import ModelNotAvailableError, RegistryError, load_registry
from visioncreator.tool_servers.diffusion.pipelines import local_source
from visioncreator.tool_servers.diffusion.registry import TOOLS, ModelEntry
from visioncreator.tool_servers.errors import LimitExceededError


def test_the_packaged_registry_maps_every_tool_to_a_small_gpu_model_and_ships_big_gpu_ones() -> None:
    registry = load_registry()
    assert set(registry.tools) == set(TOOLS)
    assert registry.for_tool("text_to_image")[1].source == "stabilityai/sd-turbo"
    assert registry.for_tool("edit_image")[1].source == "timbrooks/instruct-pix2pix"
    sources = {entry.source for entry in registry.models.values()}
    assert {"black-forest-labs/FLUX.1-schnell", "Qwen/Qwen-Image", "Qwen/Qwen-Image-Edit-2509"} <= sources
    assert registry.models["qwen-image-edit-plus"].image_input == "list"


def test_a_user_file_overrides_tools_and_whole_entries(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    path = tmp_path / "models.toml"
    path.write_text(
        '[tools]\ntext_to_image = "mine"\n\n'
        '[models.mine]\npipeline = "StableDiffusionPipeline"\nsource = "./weights"\nmax_width = 640\n'
        '[models.sd-turbo]\npipeline = "StableDiffusionPipeline"\nsource = "elsewhere/sd-turbo"\n'
    )
    registry = load_registry(path)
    name, entry = registry.for_tool("text_to_image")
    assert name == "mine"
    assert entry.source == str((tmp_path / "weights").resolve())  # relative to the registry file
    assert entry.max_width == 640
    assert registry.models["sd-turbo"].source == "elsewhere/sd-turbo"
    assert registry.models["sd-turbo"].default_steps == ModelEntry.model_fields["default_steps"].default
    assert registry.tools["edit_image"] == "instruct-pix2pix"  # kept from the packaged file


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[tools\n", "not valid TOML"),
        ('[tools]\ntext_to_image = "nope"\n', "nope"),
        ('[tools]\npaint = "sd-turbo"\n', "unknown tool 'paint'"),
        ('[models.x]\npipeline = "P"\nsource = "a/b"\ndefault_steps = 9\nmax_steps = 4\n', "default_steps"),
    ],
)
def test_bad_registry_files_are_refused_with_the_reason(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(RegistryError, match=problem):
        load_registry(path)


def test_a_missing_registry_file_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "absent.toml")


def _entry() -> ModelEntry:
    return ModelEntry(
        pipeline="StableDiffusionPipeline",
        source="a/b",
        min_width=128,
        max_width=512,
        min_height=128,
        max_height=768,
        multiple_of=16,
        min_steps=2,
        default_steps=4,
        max_steps=8,
        default_guidance=1.0,
        min_guidance=0.5,
        max_guidance=5.0,
    )


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (1024, 256, "width 1024 exceeds max_width 512 of model m"),
        (64, 256, "width 64 is below min_width 128 of model m"),
        (256, 800, "height 800 exceeds max_height 768 of model m"),
        (200, 256, "width 200 is not a multiple of 16"),
    ],
)
def test_sizes_outside_a_models_limits_name_the_limit(width: int, height: int, message: str) -> None:
    with pytest.raises(LimitExceededError, match=message):
        _entry().check_size("m", width, height)


def test_steps_and_guidance_default_and_are_checked() -> None:
    entry = _entry()
    assert entry.resolve_steps("m", None, server_max=50) == 4
    assert entry.resolve_steps("m", None, server_max=3) == 3
    assert entry.resolve_steps("m", 8, server_max=50) == 8
    with pytest.raises(LimitExceededError, match="steps 9 exceeds max_steps 8 of model m"):
        entry.resolve_steps("m", 9, server_max=50)
    with pytest.raises(LimitExceededError, match="below min_steps 2"):
        entry.resolve_steps("m", 1, server_max=50)
    with pytest.raises(LimitExceededError, match="server's max_steps 6"):
        entry.resolve_steps("m", 7, server_max=6)
    assert entry.resolve_guidance("m", None) == 1.0
    with pytest.raises(LimitExceededError, match="guidance 7 exceeds max_guidance 5 of model m"):
        entry.resolve_guidance("m", 7.0)
    with pytest.raises(LimitExceededError, match=r"below min_guidance 0\.5"):
        entry.resolve_guidance("m", 0.0)


@pytest.mark.parametrize(
    ("size", "fitted"),
    [((256, 256), (256, 256)), ((1024, 1024), (512, 512)), ((50, 100), (128, 256)), ((300, 301), (304, 304))],
)
def test_edit_sources_are_fitted_into_the_limits(size: tuple[int, int], fitted: tuple[int, int]) -> None:
    assert _entry().fit_size(*size) == fitted


def test_a_model_not_on_disk_fails_fast_saying_how_to_get_it(tmp_path: Path) -> None:
    started = time.monotonic()
    hub = ModelEntry(pipeline="StableDiffusionPipeline", source="visioncreator-tests/no-such-model")
    with pytest.raises(ModelNotAvailableError, match=r"hf download visioncreator-tests/no-such-model"):
        local_source("ghost", hub)
    local = ModelEntry(pipeline="StableDiffusionPipeline", source=str(tmp_path / "nothing"))
    with pytest.raises(ModelNotAvailableError, match=r"model ghost: .*no model_index\.json"):
        local_source("ghost", local)
    assert time.monotonic() - started < 10


def test_importing_the_package_loads_no_torch() -> None:
    code = (
        "import sys, visioncreator.tool_servers.diffusion as d; d.load_registry(); "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
