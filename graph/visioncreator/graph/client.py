"""The one place the graph talks MCP: a small client over stdio, streamable HTTP or in-process.

Tool failures never raise out of :meth:`ToolClient.call`: they come back as an outcome with
``ok=False`` and a message the policy can read. Only a dead or unreachable server raises.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import anyio
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import BlobResourceContents, TextContent, TextResourceContents

from visioncreator.graph.errors import InvalidTaskError, ToolServerUnavailable
from visioncreator.policy import ToolSpec
from visioncreator.tool_servers import INTERNAL_TOOLS, ToolName

if TYPE_CHECKING:
    from visioncreator.tool_servers.synthetic import ObserverSettings


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolOutcome:
    """The result of one tool call."""

    ok: bool
    """Whether the tool succeeded."""
    structured: dict[str, Any] | None = None
    """The tool's structured output, when it succeeded."""
    error: str | None = None
    """The tool's error message, when it failed."""
    latency_s: float = 0.0
    """Wall time of the round trip."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolServerSpec:
    """How to reach a tool server: a command to spawn over stdio, or a URL.

    The default spawns the bundled synthetic server with this Python.
    """

    command: str = sys.executable
    """Executable to spawn for stdio (ignored when ``url`` is set)."""
    args: tuple[str, ...] = ("-m", "visioncreator.tool_servers")
    """Arguments of the spawned server."""
    env: Mapping[str, str] | None = None
    """Extra environment for the spawned server."""
    url: str | None = None
    """Streamable HTTP endpoint, e.g. ``http://127.0.0.1:8765/mcp``."""
    token: str | None = None
    """Bearer token for a server started with ``--token``."""
    max_event_bytes: int = 64 * 1024 * 1024
    """Largest server-sent event accepted over HTTP: an image read is one event (the SDK's default is 1 MiB)."""
    call_timeout_s: float = 120.0
    """Timeout of one tool call."""
    connect_timeout_s: float = 60.0
    """Timeout for starting or reaching the server."""

    @classmethod
    def synthetic(
        cls,
        *,
        store: str,
        fault_rate: float = 0.0,
        tool_seed: int = 0,
        observer: ObserverSettings | None = None,
        extra_args: Sequence[str] = (),
    ) -> ToolServerSpec:
        """The bundled synthetic tool server over stdio, with its store at ``store``.

        ``tool_seed`` is mixed into the server's layout, fault and observation draws (0: the call
        seeds alone decide). ``observer`` sets the error rates of its ``inspect_image``
        (``ObserverSettings.exact()`` for the ground truth); None keeps the server's defaults.
        """
        args: tuple[str, ...] = ("-m", "visioncreator.tool_servers", "--store", store, "--fault-rate", str(fault_rate))
        if tool_seed:
            args += ("--tool-seed", str(tool_seed))
        if observer is not None:
            args += (
                *("--observe-miss-rate", repr(observer.miss_rate)),
                *("--observe-count-rate", repr(observer.count_rate)),
                *("--observe-color-rate", repr(observer.color_rate)),
                *("--observe-ocr-rate", repr(observer.ocr_rate)),
            )
        return cls(args=(*args, *extra_args))


@dataclass(kw_only=True)
class ToolClient:
    """An MCP client session to one tool server. Use as an async context manager."""

    spec: ToolServerSpec | None = None
    """How to reach the server (ignored when ``server`` is given)."""
    server: Any = None
    """An in-process ``MCPServer`` to connect to directly (tests, embedding)."""
    _client: Client | None = field(default=None, init=False, repr=False)
    _stack: AsyncExitStack | None = field(default=None, init=False, repr=False)
    _tools: tuple[ToolSpec, ...] = field(default=(), init=False, repr=False)

    @property
    def timeout_s(self) -> float:
        """Timeout of one tool call."""
        return (self.spec or ToolServerSpec()).call_timeout_s

    async def __aenter__(self) -> Self:
        spec = self.spec or ToolServerSpec()
        target: Any
        if self.server is not None:
            target = self.server
        elif spec.url:
            target = None  # made inside the exit stack below, which owns its HTTP client
        else:
            env = dict(spec.env) if spec.env else None
            target = StdioServerParameters(command=spec.command, args=list(spec.args), env=env)
        stack = AsyncExitStack()
        try:
            # The client's task group must not live inside a cancel scope we exit here, so the
            # connect timeout is the client's own request timeout (it bounds the handshake).
            if target is None:
                target = await _http_transport(spec, stack)
            client = Client(target, read_timeout_seconds=spec.connect_timeout_s)
            self._client = await stack.enter_async_context(client)
            with anyio.fail_after(spec.connect_timeout_s):
                listed = await self._client.list_tools()
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, Exception):
                raise ToolServerUnavailable(f"cannot reach the tool server ({_describe(spec)}): {exc}") from exc
            raise
        self._stack = stack
        self._tools = tuple(
            ToolSpec(name=t.name, description=t.description or "", input_schema=dict(t.input_schema))
            for t in listed.tools
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        """The server's tools, in the server's order."""
        return self._tools

    def policy_tools(self) -> tuple[ToolSpec, ...]:
        """The tools a policy may call (internal ones hidden)."""
        return tuple(t for t in self._tools if t.name not in INTERNAL_TOOLS)

    def _session(self) -> Client:
        if self._client is None:
            raise ToolServerUnavailable("the tool client is not connected: use it as `async with ToolClient(...)`")
        return self._client

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        """Call a tool. Tool errors come back as ``ok=False``; a dead server raises."""
        client = self._session()
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeout_s):
                result = await client.call_tool(name, dict(arguments))
        except TimeoutError:
            return ToolOutcome(
                ok=False, error=f"tool {name} timed out after {self.timeout_s:g} s", latency_s=self.timeout_s
            )
        except MCPError as exc:
            return ToolOutcome(ok=False, error=f"{name}: {exc}", latency_s=time.perf_counter() - started)
        latency = time.perf_counter() - started
        text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
        if result.is_error:
            return ToolOutcome(ok=False, error=text or f"{name} failed", latency_s=latency)
        structured = result.structured_content
        if structured is None and text:
            try:
                parsed = json.loads(text)
                structured = parsed if isinstance(parsed, dict) else {"text": text}
            except json.JSONDecodeError:
                structured = {"text": text}
        return ToolOutcome(ok=True, structured=dict(structured or {}), latency_s=latency)

    async def read_image(self, handle: str) -> bytes:
        """The PNG bytes of an image, through the ``image://`` resource."""
        result = await self._read(f"image://{handle}")
        for content in result:
            if isinstance(content, BlobResourceContents):
                return base64.b64decode(content.blob)
        raise ToolServerUnavailable(f"image://{handle} returned no bytes")

    async def read(self, handle: str) -> bytes:
        """The PNG bytes of an image: makes the client an image source for HTTP and local policies."""
        return await self.read_image(handle)

    async def read_truth(self, handle: str) -> dict[str, Any] | None:
        """The synthetic ground truth of an image, or None when the server has none."""
        try:
            result = await self._read(f"truth://{handle}")
        except MCPError:
            return None
        for content in result:
            if isinstance(content, TextResourceContents):
                value = json.loads(content.text)
                return value if isinstance(value, dict) else None
        return None

    async def upload(self, data: bytes) -> str:
        """Put an image file into the server's store; returns its handle."""
        outcome = await self.call(ToolName.UPLOAD_IMAGE, {"data": base64.b64encode(data).decode("ascii")})
        if not outcome.ok or not outcome.structured:
            raise InvalidTaskError(f"the tool server refused the input image: {outcome.error}")
        return str(outcome.structured["handle"])

    async def _read(self, uri: str) -> Sequence[Any]:
        client = self._session()
        with anyio.fail_after(self.timeout_s):
            result = await client.read_resource(uri)
        return list(result.contents)


async def _http_transport(spec: ToolServerSpec, stack: AsyncExitStack) -> Any:
    """Streamable HTTP with our token and event cap; the HTTP client closes with ``stack``."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    assert spec.url is not None
    headers = {"Authorization": f"Bearer {spec.token}"} if spec.token else None
    timeout = httpx2.Timeout(spec.call_timeout_s, read=spec.call_timeout_s + 5.0)
    http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=timeout))
    return streamable_http_client(spec.url, http_client=http, max_sse_event_size=spec.max_event_bytes)


def _describe(spec: ToolServerSpec) -> str:
    return spec.url or " ".join([spec.command, *spec.args])
