"""Real image generation with diffusers: the ``diffusers`` and ``tiny`` back ends.

Importing this package is cheap: its modules load on first use of a name (the server's settings
import :class:`DiffusionSettings` alone), and torch and diffusers when a pipeline is built or loaded.

- ``diffusers``: the models of a registry (the packaged ``models.toml``, or a user file merged
  over it), loaded lazily from local files only.
- ``tiny``: random tiny Stable Diffusion pipelines, built once into a cache directory and loaded
  through the very same registry and ``from_pretrained`` path, so tests run the real code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal

from visioncreator.tool_servers.diffusion.settings import DiffusionSettings

if TYPE_CHECKING:
    from visioncreator.tool_servers.backend import ImageBackend
    from visioncreator.tool_servers.diffusion.backend import BatchStats, DiffusersBackend
    from visioncreator.tool_servers.diffusion.batching import BatchCancelled, MicroBatcher, Stop
    from visioncreator.tool_servers.diffusion.composite import tile_references
    from visioncreator.tool_servers.diffusion.pipelines import ModelNotAvailableError
    from visioncreator.tool_servers.diffusion.registry import ModelEntry, Registry, RegistryError, load_registry

__all__ = [
    "BatchCancelled",
    "BatchStats",
    "DiffusersBackend",
    "DiffusionSettings",
    "MicroBatcher",
    "ModelEntry",
    "ModelNotAvailableError",
    "Registry",
    "RegistryError",
    "Stop",
    "load_registry",
    "make_backend",
    "tile_references",
]


def make_backend(kind: Literal["tiny", "diffusers"], settings: DiffusionSettings) -> ImageBackend:
    """Build the ``tiny`` or ``diffusers`` image back end.

    For ``diffusers`` nothing heavy happens here: models load on first use (or with
    ``DiffusersBackend.warm_up``); ``DiffusersBackend.missing_models`` says which are not on disk.
    For ``tiny`` the random pipelines are built under ``settings.cache_dir`` (default: a user
    cache directory) the first time, which imports torch and takes a few seconds;
    ``settings.registry`` is ignored.

    Args:
        kind: Which back end.
        settings: Device, dtype, offload, cache directory, registry file, batching.

    Returns:
        A :class:`DiffusersBackend` named ``kind``.

    Raises:
        RegistryError: The registry file is missing or invalid.
        ValueError: ``kind`` is neither ``tiny`` nor ``diffusers``.

    """
    from visioncreator.tool_servers.diffusion.backend import DiffusersBackend
    from visioncreator.tool_servers.diffusion.registry import load_registry

    if kind == "diffusers":
        return DiffusersBackend(load_registry(settings.registry), settings, name="diffusers")
    if kind == "tiny":
        from visioncreator.tool_servers.diffusion.tiny import build_tiny, default_cache_dir

        registry = build_tiny(settings.cache_dir or default_cache_dir())
        return DiffusersBackend(load_registry(registry), settings, name="tiny")
    raise ValueError(f"unknown diffusion back end {kind!r}: use 'tiny' or 'diffusers'")


_LAZY = {
    "BatchStats": "backend",
    "DiffusersBackend": "backend",
    "BatchCancelled": "batching",
    "MicroBatcher": "batching",
    "Stop": "batching",
    "tile_references": "composite",
    "ModelNotAvailableError": "pipelines",
    "ModelEntry": "registry",
    "Registry": "registry",
    "RegistryError": "registry",
    "load_registry": "registry",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the back end (anyio workers, PIL, the batcher) loads only where a name is used.
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
