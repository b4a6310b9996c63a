"""``serve-policy``: serve a policy model with vLLM on loopback until interrupted."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from visioncreator.policy.vllm.errors import VLLMServerError
from visioncreator.policy.vllm.server import VLLMServer, serve_policy
from visioncreator.policy.vllm.settings import VLLMServerSettings

__all__ = ["main"]


def _parser(defaults: VLLMServerSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visioncreator serve-policy", description="Serve a policy model with vLLM (OpenAI-compatible)."
    )
    parser.add_argument("model_dir", type=Path, help="Hugging Face model folder.")
    parser.add_argument("--python", help="Interpreter of vLLM's environment (default: .venv-vllm, then PATH).")
    parser.add_argument("--host", default=defaults.host, help="Bind address (default: loopback).")
    parser.add_argument("--port", type=int, default=None, help="Port (default: a free one).")
    parser.add_argument("--api-key", default=os.environ.get("VISIONCREATOR_VLLM_API_KEY"), help="Bearer token.")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--max-model-len", type=int, default=defaults.max_model_len)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--chat-template", type=Path, default=None, help="Chat template file.")
    parser.add_argument("--images-per-prompt", type=int, default=defaults.images_per_prompt)
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--startup-timeout", type=float, default=defaults.startup_timeout_s)
    parser.add_argument("--log-file", type=Path, default=None, help="Server log (default: a temporary file).")
    return parser


def _settings(ns: argparse.Namespace, extra: Sequence[str]) -> VLLMServerSettings:
    log_file: Path | None = ns.log_file
    return VLLMServerSettings(
        python=ns.python, host=ns.host, port=ns.port, api_key=ns.api_key, served_model_name=ns.served_model_name,
        max_model_len=ns.max_model_len, seed=ns.seed, chat_template=ns.chat_template,
        images_per_prompt=ns.images_per_prompt, enable_prefix_caching=not ns.no_prefix_caching,
        startup_timeout_s=ns.startup_timeout, extra_args=tuple(extra), log_file=log_file,
    )  # fmt: skip


def _serve_until_stopped(server: VLLMServer) -> int:
    stop = False
    with server:
        try:
            print(f"serve-policy: {server.model} at {server.base_url} (vllm {server.install.version})", flush=True)
            print(f"serve-policy: log {server.log_path}", flush=True)
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            stop = True
        if not stop:
            print(
                f"serve-policy: vLLM exited with code {server.process.returncode}:\n{server.log_tail()}",
                file=sys.stderr,
            )
    return 0 if stop else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a policy model with vLLM on loopback (``serve-policy MODEL_DIR [flags] [-- vllm args]``)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, extra = args_in[:cut], args_in[cut + 1 :]
    ns = _parser(VLLMServerSettings()).parse_args(args_in)
    settings = _settings(ns, extra)

    def _on_sigterm(signum: int, frame: object) -> None:
        # Raised wherever the main thread is, start-up included, so that the server (in a session of
        # its own, which the signal does not reach) is stopped on the way out.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server = serve_policy(ns.model_dir, settings=settings)
    except VLLMServerError as exc:
        print(f"serve-policy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return _serve_until_stopped(server)
