"""The HTTP server's bearer token: where it comes from, and the check every request passes."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TOKEN_ENV", "TOKEN_ON_COMMAND_LINE", "BearerAuth", "TokenError", "read_token"]

TOKEN_ENV = "VISIONCREATOR_TOKEN"
"""Environment variable holding the bearer token (the graph's ``--tools-url`` clients read it too)."""

TOKEN_ON_COMMAND_LINE = (
    "warning: --token puts the bearer token on the command line, where every user of this machine can read it "
    f"(ps, /proc/PID/cmdline); prefer ${TOKEN_ENV} or --token-file"
)
"""What ``visioncreator-tools --token`` prints to stderr."""


class TokenError(ValueError):
    """The token sources disagree, or the token file cannot be read or is empty."""


def read_token(
    *, token: str | None = None, token_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The bearer token from the first source given: ``token``, then ``token_file``, then ``$VISIONCREATOR_TOKEN``.

    Args:
        token: A token passed as is (``--token``; visible in the process list, so the CLI warns).
        token_file: A file whose content, stripped of surrounding whitespace, is the token.
        environ: The environment to read ``TOKEN_ENV`` from; ``os.environ`` when None.

    Returns:
        The token, or None when no source has one (an empty variable counts as unset).

    Raises:
        TokenError: Both ``token`` and ``token_file`` were given, or the file is unreadable or empty.
    """
    if token is not None and token_file is not None:
        raise TokenError("give the token one way: --token or --token-file, not both")
    if token is not None:
        return token
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"cannot read the token file {str(token_file)!r}: {exc.__class__.__name__}") from None
        if not text:
            raise TokenError(f"the token file {str(token_file)!r} is empty")
        return text
    return (os.environ if environ is None else environ).get(TOKEN_ENV) or None


class BearerAuth:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer <token>`` get 401.

    The scheme is matched case-insensitively (RFC 9110 section 11.1); the token itself is compared
    in constant time, so response timing does not leak it.

    Args:
        app: The application behind the check.
        token: The token clients must send.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = token.encode()

    def _authorized(self, scope: Scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, credentials = given.strip().partition(b" ")
        # Compare even on a wrong scheme, so both paths take the same time.
        matches = hmac.compare_digest(credentials.strip(), self._expected)
        return scheme.lower() == b"bearer" and matches

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an HTTP request without the token; pass everything else on."""
        if scope["type"] == "http" and not self._authorized(scope):
            body = b'{"error": "missing or wrong bearer token"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)
