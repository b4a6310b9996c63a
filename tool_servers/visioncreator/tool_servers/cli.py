"""``visioncreator-tools``: run the MCP tool server over stdio or streamable HTTP.

Start-up is on the critical path of every spawned server, so this module imports what both
transports need and no more: the HTTP stack (uvicorn, starlette's app) loads only for
``--transport http``, and a back end's heavy modules only when it is built.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

import anyio
from pydantic import ValidationError

from visioncreator.tool_servers.bearer import TOKEN_ENV, TOKEN_ON_COMMAND_LINE, TokenError, read_token
from visioncreator.tool_servers.readiness import Readiness
from visioncreator.tool_servers.settings import ServerSettings

__all__ = ["main"]


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where the help says it (most defaults live in ServerSettings)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Errors in one line, exit status 2: no usage block (a client that spawned us shows stderr)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text}")
    return value


_FLAGS = {
    "store_root": "--store",
    "bearer_token": "--token",
    "simulated_latency_s": "--latency",
    "request_timeout_s": "--request-timeout",
    "header_timeout_s": "--header-timeout",
    "body_timeout_s": "--body-timeout",
    "allowed_hosts": "--allow-host",
    "allowed_origins": "--allow-origin",
}
"""Settings fields whose flag is not the field's name with dashes."""


def _flag(loc: tuple[int | str, ...]) -> str:
    if not loc:  # a check across fields: its message names them
        return "settings"
    name = str(loc[-1])
    return "argument " + _FLAGS.get(name, "--" + name.replace("_", "-"))


_DIFFUSION_MODULES = ("torch", "diffusers", "transformers")


def _missing_diffusers() -> list[str]:
    missing = []
    for name in _DIFFUSION_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # an import hook refused it, or a half-installed package
            found = False
        if not found:
            missing.append(name)
    return missing


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="visioncreator-tools", description="The visioncreator MCP image tool server.", formatter_class=_Help
    )
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or http")
    parser.add_argument("--host", help="HTTP interface (default 127.0.0.1; others need --token)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8765; 0 picks a free one)")
    parser.add_argument("--store", type=Path, help="image store directory (default: $VISIONCREATOR_STORE or cache)")
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the bearer token HTTP clients must send (default: ${TOKEN_ENV}; none: loopback only)",
    )
    parser.add_argument(
        "--token", help="the bearer token itself (visible to other users in the process list; default: none)"
    )
    parser.add_argument(
        "--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), help="log level"
    )

    backend = parser.add_argument_group("back end")
    backend.add_argument(
        "--backend", choices=("synthetic", "tiny", "diffusers"), help="image back end (default synthetic)"
    )
    backend.add_argument("--fault-rate", type=_rate, help="synthetic back end fault probability (default 0)")
    backend.add_argument("--tool-seed", type=int, help="synthetic back end seed mixed into every draw (default 0)")
    observer = parser.add_argument_group(
        "synthetic inspect_image errors", "rates, 0 to 1, of the synthetic observer's mistakes; all 0: exact truth"
    )
    observer.add_argument("--observe-miss-rate", type=_rate, help="an object goes unseen (default 0.05)")
    observer.add_argument("--observe-count-rate", type=_rate, help="a kind's count is off by one (default 0.05)")
    observer.add_argument("--observe-color-rate", type=_rate, help="a colour is read as a nearby one (default 0.05)")
    observer.add_argument("--observe-ocr-rate", type=_rate, help="the text is misread by a letter (default 0.1)")
    backend.add_argument("--latency", type=float, help="simulated seconds per generated image (default 0)")
    backend.add_argument(
        "--call-log", type=Path, help="append a JSON line per generated image to this file (default: none)"
    )
    backend.add_argument("--registry", type=Path, help="diffusers model registry file (TOML; default: packaged)")
    backend.add_argument("--device", help="torch device for diffusers, e.g. cuda, cuda:1, cpu (default: pick one)")
    backend.add_argument(
        "--dtype", choices=("auto", "float32", "float16", "bfloat16"), help="weights dtype (default auto)"
    )
    backend.add_argument(
        "--cpu-offload", action="store_true", default=None, help="offload idle sub-models to the CPU (saves GPU memory)"
    )
    backend.add_argument(
        "--preload",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load every model of the registry's tools before answering initialize (stdio) or announcing "
        "that it listens (HTTP; GET /ready answers 503 meanwhile); default on for tiny and diffusers",
    )
    backend.add_argument("--max-batch", type=int, help="most requests one pipeline call serves (default 8)")
    backend.add_argument("--batch-wait-ms", type=float, help="longest a request waits to share a batch (default 20)")

    _add_limits(parser.add_argument_group("limits"))
    return parser


def _add_limits(limits: argparse._ArgumentGroup) -> None:
    limits.add_argument("--max-steps", type=int, help="most denoising steps a caller may ask for (default 50)")
    limits.add_argument("--max-concurrency", type=int, help="tool calls that run at once (default 64)")
    limits.add_argument("--max-queue", type=int, help="tool calls that may wait; more are refused (default 256)")
    limits.add_argument(
        "--write-behind",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="answer an image call once its handle is known and its recipe journaled, writing the PNG behind "
        "(default: on for the synthetic back end, off for the diffusion ones, whose answers wait for the file)",
    )
    limits.add_argument("--request-timeout", type=float, help="seconds one tool call may take (default 120)")
    limits.add_argument("--max-input-bytes", type=int, help="largest uploaded image file in bytes (default 20 MiB)")
    limits.add_argument(
        "--max-decoded-pixels", type=int, help="largest width*height of an uploaded image (default 40,000,000)"
    )
    limits.add_argument(
        "--max-inflight-pixels",
        type=int,
        help="decoded pixels all running calls may hold; more wait (default 64,000,000)",
    )
    limits.add_argument(
        "--max-connections", type=int, help="HTTP connections served at once; more get 503 (default 64)"
    )
    limits.add_argument("--header-timeout", type=float, help="seconds to send request headers (default 10)")
    limits.add_argument("--body-timeout", type=float, help="seconds to send a request body; then 408 (default 30)")
    limits.add_argument(
        "--max-inflight-body-bytes",
        type=int,
        help="request body bytes all requests may hold; then 503 (default 64 MiB)",
    )
    limits.add_argument(
        "--max-session-requests", type=int, help="requests one MCP session may have in flight; then 429 (default 16)"
    )
    limits.add_argument(
        "--resource-page-size", type=int, help="images per page of resources/list, by handle (default 100)"
    )
    limits.add_argument(
        "--allow-host",
        action="append",
        help="extra Host header value to accept (repeatable; name, name:port, name:*; default: none)",
    )
    limits.add_argument(
        "--allow-origin",
        action="append",
        help="extra Origin header value to accept (repeatable; e.g. https://x:*; default: none)",
    )


def _settings(options: argparse.Namespace, token: str | None = None) -> ServerSettings:
    diffusion = {
        "registry": options.registry,
        "device": options.device,
        "dtype": options.dtype,
        "cpu_offload": options.cpu_offload,
        "max_batch": options.max_batch,
        "batch_wait_ms": options.batch_wait_ms,
        "preload": options.preload,
        # The server refuses steps over max_steps; the back end gets the same ceiling.
        "max_steps": options.max_steps,
    }
    given: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "store_root": options.store,
        "backend": options.backend,
        "fault_rate": options.fault_rate,
        "tool_seed": options.tool_seed,
        "observe_miss_rate": options.observe_miss_rate,
        "observe_count_rate": options.observe_count_rate,
        "observe_color_rate": options.observe_color_rate,
        "observe_ocr_rate": options.observe_ocr_rate,
        "bearer_token": token,
        "simulated_latency_s": options.latency,
        "call_log": options.call_log,
        "max_steps": options.max_steps,
        "max_concurrency": options.max_concurrency,
        "max_queue": options.max_queue,
        "write_behind": options.write_behind,
        "request_timeout_s": options.request_timeout,
        "max_connections": options.max_connections,
        "header_timeout_s": options.header_timeout,
        "body_timeout_s": options.body_timeout,
        "max_inflight_body_bytes": options.max_inflight_body_bytes,
        "max_input_bytes": options.max_input_bytes,
        "max_decoded_pixels": options.max_decoded_pixels,
        "max_inflight_pixels": options.max_inflight_pixels,
        "max_session_requests": options.max_session_requests,
        "resource_page_size": options.resource_page_size,
        "allowed_hosts": tuple(options.allow_host) if options.allow_host else None,
        "allowed_origins": tuple(options.allow_origin) if options.allow_origin else None,
        "diffusion": {key: value for key, value in diffusion.items() if value is not None},
    }
    return ServerSettings.model_validate({key: value for key, value in given.items() if value is not None})


def main(argv: list[str] | None = None) -> None:
    """Serve the MCP image tools over stdio or streamable HTTP (also ``visioncreator-tools``)."""
    parser = _parser()
    options = parser.parse_args(argv)
    # Configure the root logger before MCPServer does: its default handler would be the only
    # one, and stdout must stay clean for the stdio protocol.
    logging.basicConfig(
        level=options.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    token = None
    if options.transport == "http":
        if options.token is not None:
            print(TOKEN_ON_COMMAND_LINE, file=sys.stderr, flush=True)
        try:
            token = read_token(token=options.token, token_file=options.token_file)
        except TokenError as exc:
            parser.error(str(exc))
    try:
        settings = _settings(options, token)
    except ValidationError as exc:
        # Messages only: pydantic's full text would echo the inputs, the token among them.
        parser.error("; ".join(f"{_flag(e['loc'])}: {e['msg']}" for e in exc.errors()))
    if settings.backend != "synthetic" and _missing_diffusers():
        parser.error(
            f"argument --backend: {settings.backend} needs the diffusers extra (missing: "
            f"{', '.join(_missing_diffusers())}): pip install 'visioncreator[diffusers]'"
        )
    from visioncreator.tool_servers.server import build_server
    from visioncreator.tool_servers.tools import default_backend

    backend = default_backend(settings)
    readiness = Readiness(backend, backend_name=settings.backend, preload=settings.diffusion.preload)
    server = build_server(settings, backend=backend)
    if options.transport == "stdio":
        # Before the first read of stdin: the client's initialize is answered once every model is in.
        readiness.preload()
        anyio.run(server.run_stdio_async)
    else:
        from visioncreator.tool_servers.http import serve_http

        with contextlib.suppress(KeyboardInterrupt):
            serve = functools.partial(serve_http, log_level=options.log_level.lower(), readiness=readiness)
            anyio.run(serve, server, settings)
