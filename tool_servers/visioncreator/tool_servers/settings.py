"""Settings of the visioncreator MCP tool server."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from visioncreator.tool_servers.diffusion.settings import DiffusionSettings
from visioncreator.tool_servers.scene import FaultType

__all__ = ["STORE_ENV", "BackendKind", "ImageFormat", "ServerSettings", "default_store_root", "is_loopback"]

BackendKind = Literal["synthetic", "tiny", "diffusers"]
"""The image back ends a server can build by name."""

ImageFormat = Literal["PNG", "JPEG", "WEBP"]
"""Upload formats the safe decoder knows, recognised by their magic bytes."""

STORE_ENV = "VISIONCREATOR_STORE"
"""Environment variable that overrides the default image store directory."""


def default_store_root() -> Path:
    """The image store directory: ``$VISIONCREATOR_STORE``, else a per-user cache directory."""
    override = os.environ.get(STORE_ENV)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "visioncreator" / "images"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerSettings(BaseModel):
    """Everything a tool server needs to know; every limit is a named field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface to bind in HTTP mode; loopback by default.")
    port: int = Field(default=8765, ge=0, le=65535, description="TCP port in HTTP mode; 0 picks a free one.")
    path: str = Field(default="/mcp", pattern=r"^/", description="URL path of the streamable HTTP endpoint.")
    store_root: Path = Field(
        default_factory=default_store_root,
        description=f"Directory of the content-addressed image store (env {STORE_ENV} overrides the default).",
    )
    backend: BackendKind = Field(
        default="synthetic",
        description="Image back end built when none is passed in: synthetic (procedural, with ground truth), tiny "
        "(random-weight diffusers pipelines, for CPU tests) or diffusers (real models from the registry).",
    )
    diffusion: DiffusionSettings = Field(
        default_factory=DiffusionSettings,
        description="How the tiny and diffusers back ends load and batch pipelines (registry, device, dtype, "
        "offload, max_batch, batch_wait_ms).",
    )
    fault_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability that the synthetic back end injects a fault."
    )
    tool_seed: int = Field(
        default=0,
        description="Seed the synthetic back end mixes into every layout, fault and observation draw, so tool "
        "randomness can be "
        "varied apart from the callers' seeds; 0 keeps the draws as the call seeds alone make them.",
    )
    fault_types: tuple[FaultType, ...] | None = Field(
        default=None, description="Fault types the synthetic back end may inject; None means all."
    )
    # The observer's defaults are ObserverSettings' (a test pins them equal); spelled out here so
    # that reading the settings does not import the synthetic back end.
    observe_miss_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Synthetic inspect_image: probability that an object goes unseen."
    )
    observe_count_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Synthetic inspect_image: probability, per kind, that its count is reported off by one.",
    )
    observe_color_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Synthetic inspect_image: probability that an object's colour is read as a nearby colour.",
    )
    observe_ocr_rate: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Synthetic inspect_image: probability that the image's text is misread by one letter. "
        "All four observe rates at 0 report the exact ground truth.",
    )
    max_width: int = Field(default=2048, ge=1, description="Largest width a tool may be asked for, in pixels.")
    max_height: int = Field(default=2048, ge=1, description="Largest height a tool may be asked for, in pixels.")
    max_pixels: int = Field(
        default=4_194_304,
        ge=1,
        description="Largest width * height a tool may be asked for. An upload or stored image larger than "
        "max_width x max_height x max_pixels is downscaled (aspect ratio kept) to fit when decoded.",
    )
    max_steps: int = Field(
        default=50, ge=1, le=1000, description="Most denoising steps a caller may ask for (the steps argument)."
    )
    max_input_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest uploaded image file, in bytes (before base64)."
    )
    max_decoded_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="Largest width * height of an uploaded image, checked on the file's header before decoding; "
        "larger files are refused.",
    )
    allowed_input_formats: tuple[ImageFormat, ...] = Field(
        default=("PNG", "JPEG", "WEBP"),
        min_length=1,
        description="Upload formats accepted, recognised by magic bytes (never by name or MIME type).",
    )
    preview_size: int = Field(default=128, ge=16, le=1024, description="Longest side of inline previews, in pixels.")
    resource_page_size: int = Field(
        default=100, ge=1, le=1000, description="Images per page of resources/list (the store's images, by handle)."
    )
    bearer_token: str | None = Field(
        default=None, min_length=16, description="Token HTTP clients must send as 'Authorization: Bearer <token>'."
    )
    max_inflight_pixels: int = Field(
        default=64_000_000,
        ge=1,
        description="Decoded pixels (uploads and references) all in-flight tool calls may hold at once; a call "
        "that would pass it waits for room, so memory stays bounded however many calls arrive.",
    )
    max_connections: int = Field(
        default=64, ge=1, description="HTTP connections served at once; more are answered 503 and closed."
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a client has to send a request's headers; slower ones are closed."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds a client has to send a request's whole body; slower ones are closed."
    )
    max_inflight_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Request body bytes all HTTP requests may hold at once; a request that would pass it is "
        "answered 503 with Retry-After.",
    )
    max_session_requests: int = Field(
        default=16,
        ge=1,
        description="POST requests (JSON-RPC messages) one MCP session may have in flight at once; more are "
        "answered 429. The session's one GET event stream is not counted.",
    )
    allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Extra Host header values accepted besides the bound host and its loopback aliases (DNS-"
        "rebinding protection is on for every bind address).",
    )
    allowed_origins: tuple[str, ...] = Field(
        default=(), description="Extra Origin header values accepted besides the bound host's own."
    )
    max_concurrency: int = Field(
        default=64,
        ge=1,
        description="Tool calls that may run at once; the rest wait (up to max_queue). 64 fits a remote or "
        "simulated back end that waits rather than computes; the diffusers back end batches what runs at once.",
    )
    max_queue: int = Field(
        default=256,
        ge=0,
        description="Tool calls that may wait for a free slot; a call beyond running plus waiting is refused at "
        "once with a tool error, so a flood cannot pile up unbounded work.",
    )
    request_timeout_s: float = Field(
        default=120.0, gt=0, description="Seconds one tool call may take before it fails with a timeout."
    )

    write_behind: bool | None = Field(
        default=None,
        description="Answer an image-producing call once the image's handle is known (a hash of its pixels and "
        "truth) and encode and write the PNG on a writer thread: the answer's bytes is then null. Before it "
        "answers, the server appends the call's recipe to a journal in the store (one short write), so a server "
        "killed before the PNG is written loses nothing that can be made again: the next server that misses the "
        "handle makes the image again from its recipe, and a deterministic back end gives the very handle. "
        "None (default): on for the synthetic back end (deterministic), off for the diffusion back ends, whose "
        "answers then wait for the file.",
    )
    max_pending_writes: int = Field(
        default=64,
        ge=1,
        description="Images that may wait for the writer thread (write_behind); a call beyond that writes its own "
        "file before it answers, so memory stays bounded when generation outpaces encoding.",
    )
    store_cache_pixels: int = Field(
        default=16_777_216,
        ge=0,
        description="Decoded pixels of recently stored or read images the store keeps in memory (16 Mpx: 64 "
        "images of 512x512, 48 MiB), so edit, reference and inspect calls do not decode them again; 0 keeps none.",
    )

    simulated_latency_s: float = Field(
        default=0.0,
        ge=0.0,
        le=600.0,
        description="Seconds each image-producing call waits before it returns: stands in for a real "
        "generator's time in tests and benchmarks.",
    )
    call_log: Path | None = Field(
        default=None,
        description="Append one JSON line per completed image-producing call (tool, handle, seed, time): an audit "
        "trail of what the server really ran.",
    )

    @field_validator("host")
    @classmethod
    def _unbracketed(cls, value: str) -> str:
        # "[::1]" is how a URL spells an IPv6 host; the socket wants "::1" (the URL adds them back).
        return value[1:-1] if value.startswith("[") and value.endswith("]") else value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> Self:
        if not is_loopback(self.host) and self.bearer_token is None:
            raise ValueError(
                f"host {self.host!r} is not a loopback address: set bearer_token (--token) to serve beyond this machine"
            )
        return self

    @property
    def writes_behind(self) -> bool:
        """Whether image calls answer before their PNG is written (``write_behind``, its default resolved)."""
        return self.backend == "synthetic" if self.write_behind is None else self.write_behind

    @property
    def url(self) -> str:
        """The HTTP endpoint URL this configuration serves."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"
