"""The policy's vLLM server: find vLLM, start an OpenAI-compatible server for a model, wait, stop.

``python -m visioncreator.policy.vllm`` (or ``visioncreator serve-policy``) runs :func:`main`.
"""

from visioncreator.policy.vllm.cli import main
from visioncreator.policy.vllm.command import build_command
from visioncreator.policy.vllm.errors import VLLMNotFoundError, VLLMServerError, VLLMStartError
from visioncreator.policy.vllm.install import VLLMInstall, find_vllm_python, probe_install
from visioncreator.policy.vllm.server import VLLMServer, load_lora_adapter, serve_policy
from visioncreator.policy.vllm.settings import VLLMServerSettings

__all__ = [
    "VLLMInstall",
    "VLLMNotFoundError",
    "VLLMServer",
    "VLLMServerError",
    "VLLMServerSettings",
    "VLLMStartError",
    "build_command",
    "find_vllm_python",
    "load_lora_adapter",
    "main",
    "probe_install",
    "serve_policy",
]
