"""``serve-policy``: serve a policy model with vLLM on loopback until interrupted."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from visioncreator.policy.vllm.errors import VLLMServerError
from visioncreator.policy.vllm.server import VLLMServer, serve_policy
from visioncreator.policy.vllm.settings import VLLMServerSettings

__all__ = ["main"]

API_KEY_ENV = "VISIONCREATOR_VLLM_API_KEY"
"""Environment variable the bearer token is read from when ``--api-key`` is not given."""


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where the help says what decides it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Errors in one line, exit status 2, before anything starts."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low: int | float, kind: type[int] | type[float] = int) -> Callable[[str], Any]:
    noun = "an integer" if kind is int else "a number"

    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be {noun} of at least {low:g}, got {text}")
        return value

    return convert


def _port(text: str) -> int:
    value = _at_least(0)(text)
    if value > _MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {_MAX_PORT}, got {text}")
    return int(value)


_MAX_PORT = 65535


def _parser(defaults: VLLMServerSettings) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="visioncreator serve-policy",
        description="Serve a policy model with vLLM (OpenAI-compatible).",
        formatter_class=_Help,
    )
    parser.add_argument("model_dir", type=Path, help="Hugging Face model folder.")
    parser.add_argument("--python", help="Interpreter of vLLM's environment (default: .venv-vllm, then PATH).")
    parser.add_argument("--host", default=defaults.host, help="Bind address.")
    parser.add_argument("--port", type=_port, default=None, help="Port (default: a free one).")
    parser.add_argument("--api-key", help=f"Bearer token clients must send (default: ${API_KEY_ENV}, else none).")
    parser.add_argument("--served-model-name", default=None, help="Model name clients send (default: the folder's).")
    parser.add_argument("--max-model-len", type=_at_least(1), default=defaults.max_model_len, help="Context length.")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="Sampling seed.")
    parser.add_argument("--chat-template", type=Path, default=None, help="Chat template file (default: the model's).")
    parser.add_argument(
        "--images-per-prompt", type=_at_least(0), default=defaults.images_per_prompt, help="Most images per prompt."
    )
    parser.add_argument("--no-prefix-caching", action="store_true", help="Switch prefix caching off.")
    parser.add_argument(
        "--startup-timeout",
        type=_at_least(1, float),
        default=defaults.startup_timeout_s,
        help="Seconds to wait for the server to answer.",
    )
    parser.add_argument("--log-file", type=Path, default=None, help="Server log (default: a temporary file).")
    return parser


def _settings(ns: argparse.Namespace, extra: Sequence[str]) -> VLLMServerSettings:
    log_file: Path | None = ns.log_file
    api_key = ns.api_key if ns.api_key is not None else os.environ.get(API_KEY_ENV)
    return VLLMServerSettings(
        python=ns.python, host=ns.host, port=ns.port, api_key=api_key, served_model_name=ns.served_model_name,
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
    parser = _parser(VLLMServerSettings())
    ns = parser.parse_args(args_in)
    if not ns.model_dir.is_dir():
        parser.error(f"argument model_dir: {ns.model_dir} is not a folder (a Hugging Face model folder)")
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
