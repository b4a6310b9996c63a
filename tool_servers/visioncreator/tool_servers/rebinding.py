"""DNS-rebinding protection on every bind address: the Host and Origin headers must name this server.

A web page on ``evil.example`` whose DNS later answers with this machine's address can make a
browser send requests here carrying ``Host: evil.example`` and ``Origin: http://evil.example``.
The MCP SDK only switches its check on for three loopback spellings; this middleware is always on.

What is accepted, for a connection that arrived on local address ``A`` and port ``P``:

- ``Host``: ``A:P`` (the IP literal the client connected to; a rebinding attacker cannot make a
  browser send an IP literal for its own name), ``localhost:P``, ``127.0.0.1:P`` and ``[::1]:P``
  when ``A`` is loopback, the configured bind host's own name with ``P``, and each of
  ``allowed_hosts`` (a bare name also matches it with port ``P``; ``name:*`` any port).
  Without a port only when ``P`` is 80.
- ``Origin`` (absent is fine: non-browser clients send none): ``http://`` plus any accepted Host
  that names this server itself, or one of ``allowed_origins`` (``scheme://name:*`` any port).

So a wildcard bind (``0.0.0.0``/``::``) accepts the address each client connected to, loopback
names over loopback, and the names configured; a proxy in front must be listed in
``allowed_hosts`` (and its page's origin in ``allowed_origins``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from visioncreator.tool_servers.settings import is_loopback

__all__ = ["HostGuard"]

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _literal(host: str) -> str:
    """``host`` as it appears in a Host header: IPv6 in brackets, IPv4-mapped IPv6 as IPv4."""
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return bare.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return f"[{address}]" if address.version == 6 else str(address)


def _split(value: str) -> tuple[str, str | None]:
    """A Host value as (name, port or None); IPv6 names keep their brackets."""
    if value.startswith("["):
        name, _, rest = value.partition("]")
        return _literal(name + "]"), rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        name, port = value.split(":")
        return _literal(name), port
    return _literal(value), None


def _with_port(names: Iterable[str], port: int) -> set[str]:
    spelled = {f"{name}:{port}" for name in names}
    # Clients omit the default port.
    return spelled | set(names) if port == 80 else spelled


def _matches(value: str, allowed: set[str], any_port: tuple[str, ...]) -> bool:
    """Whether ``value`` is allowed, or is ``prefix`` plus a port number for a prefix in ``any_port``."""
    return value in allowed or any(value.startswith(prefix) and value[len(prefix) :].isdigit() for prefix in any_port)


class HostGuard:
    """ASGI middleware: requests whose Host or Origin names another site get 421 or 403.

    Args:
        app: The application behind the check.
        bind_host: The host the server binds (``settings.host``).
        allowed_hosts: Extra Host values (``settings.allowed_hosts``).
        allowed_origins: Extra Origin values (``settings.allowed_origins``).
    """

    def __init__(
        self, app: ASGIApp, *, bind_host: str, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()
    ) -> None:
        self._app = app
        self._bind = _literal(bind_host)
        self._wildcard_bind = self._bind in ("0.0.0.0", "[::]")
        hosts = [_split(host.lower()) for host in allowed_hosts]
        origins = [origin.lower().rstrip("/") for origin in allowed_origins]
        # ``name:*`` entries become prefixes that a port number must follow.
        self._host_patterns = tuple(f"{name}:" for name, port in hosts if port == "*")
        self._origin_patterns = tuple(origin[:-1] for origin in origins if origin.endswith(":*"))
        self._exact_hosts = {f"{name}:{port}" for name, port in hosts if port not in (None, "*")}
        self._any_port_hosts = [name for name, port in hosts if port is None]
        self._extra_origins = {origin for origin in origins if not origin.endswith(":*")}
        self._cache: dict[tuple[str, int], tuple[set[str], set[str]]] = {}

    def _allowed(self, local: str, port: int) -> tuple[set[str], set[str]]:
        """Accepted Host values and Origin values for a connection to ``local``:``port``."""
        key = (local, port)
        if key not in self._cache:
            own = {_literal(local)}
            if not self._wildcard_bind:
                own.add(self._bind)
            if is_loopback(local.strip("[]")):
                own.update(_literal(name) for name in _LOOPBACK_NAMES)
            own_hosts = _with_port(own, port)
            # A configured bare name is accepted with this server's port and without one (a proxy's).
            configured = {f"{name}:{port}" for name in self._any_port_hosts} | set(self._any_port_hosts)
            hosts = own_hosts | configured | self._exact_hosts
            origins = {f"http://{host}" for host in own_hosts} | self._extra_origins
            self._cache[key] = (hosts, origins)
        return self._cache[key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check an HTTP request's Host and Origin, then pass it on (other scopes pass untouched)."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        server = scope.get("server") or (self._bind, 80)
        hosts, origins = self._allowed(str(server[0]), int(server[1] or 80))
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        origin = headers.get("origin")
        if not _matches(host, hosts, self._host_patterns):
            await _refuse(send, 421, b"Invalid Host header")
        elif origin is not None and not _matches(origin.lower(), origins, self._origin_patterns):
            await _refuse(send, 403, b"Invalid Origin header")
        else:
            await self._app(scope, receive, send)


async def _refuse(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
