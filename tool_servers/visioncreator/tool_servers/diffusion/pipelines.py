"""Loading diffusers pipelines: offline only, lazily, once per model, on a chosen device and dtype.

Nothing here ever touches the network: a hub id must already be in the local Hugging Face cache
(``hf download <id>``), and every ``from_pretrained`` runs with ``local_files_only=True``. A model
that is not on disk fails at once with a message that says how to get it.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visioncreator.tool_servers.diffusion.registry import ModelEntry
from visioncreator.tool_servers.diffusion.settings import DiffusionSettings
from visioncreator.tool_servers.errors import ToolServerError

if TYPE_CHECKING:
    import torch

_KEY_SEPARATOR = "\x1f"
"""Joins a model's name, pipeline class and source into its cache key (none of them holds it)."""

__all__ = ["ModelNotAvailableError", "PipelineCache", "local_source", "pick_device", "pick_dtype"]


class ModelNotAvailableError(ToolServerError):
    """A registry model whose weights are not on this machine (nothing is downloaded at run time)."""


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().is_dir()


def local_source(name: str, entry: ModelEntry) -> Path:
    """The local directory holding ``entry``'s weights, without loading anything heavy.

    Raises:
        ModelNotAvailableError: The directory does not exist, or the hub id is not in the local cache.

    """
    source = entry.source
    if _looks_like_path(source):
        path = Path(source).expanduser()
        if not (path / "model_index.json").is_file():
            raise ModelNotAvailableError(
                f"model {name}: {path} is not a saved diffusers pipeline (no model_index.json there); "
                f"fix 'source' of [models.{name}] in the registry"
            )
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(source, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelNotAvailableError(
            f"model {name} ({source}) is not on this machine and nothing is downloaded at run time: "
            f"run `hf download {source}` (older huggingface_hub: `huggingface-cli download {source}`) "
            f"where the hub is reachable, or set 'source' of [models.{name}] in a registry file to a local "
            "directory holding the saved pipeline"
        ) from exc
    assert isinstance(snapshot, str)
    return Path(snapshot)


def pick_device(settings: DiffusionSettings) -> str:
    """The torch device to run on: the configured one, else CUDA, MPS or the CPU, in that order."""
    if settings.device is not None:
        return settings.device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(settings: DiffusionSettings, device: str) -> torch.dtype:
    """The weights dtype: the configured one, else bfloat16 (or float16) on an accelerator, float32 on a CPU."""
    import torch

    if settings.dtype != "auto":
        dtype: torch.dtype = getattr(torch, settings.dtype)
        return dtype
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.float32


class PipelineCache:
    """Loads each registry model on first use and keeps it; thread-safe.

    Loading happens in the thread that first asks (the batcher's worker thread), so the event
    loop never blocks on it.
    """

    def __init__(self, settings: DiffusionSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._pipelines: dict[str, Any] = {}
        self._device: str | None = None

    @property
    def device(self) -> str:
        """The device pipelines run on."""
        if self._device is None:
            self._device = pick_device(self._settings)
        return self._device

    def loaded(self) -> list[str]:
        """Names of the models loaded so far."""
        with self._lock:
            return sorted({key.split(_KEY_SEPARATOR, 1)[0] for key in self._pipelines})

    def get(self, name: str, entry: ModelEntry) -> Any:
        """The pipeline of model ``name``, loading it the first time.

        Raises:
            ModelNotAvailableError: Its weights are not on disk.
            ToolServerError: Its pipeline class is not one diffusers knows.

        """
        with self._lock:
            key = _KEY_SEPARATOR.join((name, entry.pipeline, entry.source))
            if key not in self._pipelines:
                self._pipelines[key] = self._load(name, entry)
            return self._pipelines[key]

    def _load(self, name: str, entry: ModelEntry) -> Any:
        path = local_source(name, entry)
        import diffusers
        import torch

        if self._settings.torch_threads is not None:
            torch.set_num_threads(self._settings.torch_threads)
        # Loading bars would clutter a server's log (and a benchmark's output) on every load.
        diffusers.utils.logging.disable_progress_bar()
        with contextlib.suppress(ImportError):
            import transformers

            transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        pipeline_class = getattr(diffusers, entry.pipeline, None)
        if pipeline_class is None or not hasattr(pipeline_class, "from_pretrained"):
            raise ToolServerError(
                f"model {name}: diffusers {diffusers.__version__} has no pipeline class {entry.pipeline!r}"
            )
        device = self.device
        options: dict[str, Any] = {_dtype_keyword(): pick_dtype(self._settings, device), "local_files_only": True}
        if entry.variant is not None:
            options["variant"] = entry.variant
        pipeline = pipeline_class.from_pretrained(str(path), **options)
        if self._settings.cpu_offload and not device.startswith("cpu"):
            pipeline.enable_model_cpu_offload(device=device)
        else:
            pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline


def _dtype_keyword() -> str:
    """``dtype`` on diffusers that renamed ``torch_dtype`` (0.42+ warns on the old name), else ``torch_dtype``."""
    import importlib

    try:
        deprecations = importlib.import_module("diffusers.utils.deprecation_utils")
    except ImportError:
        return "torch_dtype"
    return "dtype" if hasattr(deprecations, "_resolve_dtype") else "torch_dtype"
