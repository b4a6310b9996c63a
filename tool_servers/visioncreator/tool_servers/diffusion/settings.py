"""Settings of the diffusion back ends (no heavy import here: the server reads them at start)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DiffusionSettings(BaseModel):
    """How the ``diffusers`` and ``tiny`` back ends load and run pipelines."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: Path | None = Field(
        default=None, description="Model registry file (TOML); None uses the packaged default registry."
    )
    device: str | None = Field(default=None, description="torch device ('cuda', 'cuda:1', 'cpu'); None picks one.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="Weights dtype; auto is bfloat16/float16 on a GPU, float32 on a CPU."
    )
    cpu_offload: bool = Field(default=False, description="Offload idle sub-models to the CPU (saves GPU memory).")
    cache_dir: Path | None = Field(
        default=None, description="Where the tiny back end saves its random pipelines (default: a user cache dir)."
    )
    preload: bool = Field(
        default=True,
        description="Load every model the registry's tools use before the server answers initialize (stdio) or "
        "announces that it listens (HTTP), so no task pays a model load; False loads each on first use.",
    )
    max_batch: int = Field(default=8, ge=1, le=64, description="Most requests one pipeline call serves.")
    batch_wait_ms: float = Field(
        default=20.0, ge=0.0, le=5000.0, description="Longest a request waits for others to share its batch."
    )
    max_steps: int = Field(default=50, ge=1, le=1000, description="Most denoising steps a caller may ask for.")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="CPU threads torch may use (process-wide, set when a pipeline loads); None keeps torch's default.",
    )
