"""``visioncreator-tools``: run the MCP tool server over stdio or streamable HTTP."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
from pathlib import Path

import anyio
from pydantic import ValidationError

from visioncreator.tool_servers.http import serve_http
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visioncreator-tools", description="The visioncreator MCP image tool server.")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or http")
    parser.add_argument("--host", help="HTTP interface (default 127.0.0.1; others need --token)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8765; 0 picks a free one)")
    parser.add_argument("--store", type=Path, help="image store directory (default: $VISIONCREATOR_STORE or cache)")
    parser.add_argument("--fault-rate", type=float, help="synthetic back end fault probability (default 0)")
    parser.add_argument("--latency", type=float, help="simulated seconds per generated image (default 0)")
    parser.add_argument("--call-log", type=Path, help="append a JSON line per generated image to this file")
    parser.add_argument("--token", help="bearer token HTTP clients must send (default: none, loopback only)")
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``visioncreator-tools`` and ``python -m visioncreator.tool_servers``."""
    parser = _parser()
    options = parser.parse_args(argv)
    # Configure the root logger before MCPServer does: its default handler would be the only
    # one, and stdout must stay clean for the stdio protocol.
    logging.basicConfig(
        level=options.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    given = {
        "host": options.host,
        "port": options.port,
        "store_root": options.store,
        "fault_rate": options.fault_rate,
        "bearer_token": options.token,
        "simulated_latency_s": options.latency,
        "call_log": options.call_log,
    }
    try:
        settings = ServerSettings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        # Messages only: pydantic's full text would echo the inputs, the token among them.
        parser.error("; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()))
    server = build_server(settings)
    if options.transport == "stdio":
        anyio.run(server.run_stdio_async)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(functools.partial(serve_http, server, settings, log_level=options.log_level.lower()))
