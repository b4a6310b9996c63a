"""The one place the graph talks MCP: a small client over stdio, streamable HTTP or in-process.

Tool failures never raise out of :meth:`ToolClient.call`: they come back as an outcome with
``ok=False`` and a message the policy can read. A dead or unreachable server is not a tool
failure: it raises :class:`~visioncreator.graph.ToolServerLost` (after a few quick retries for
HTTP error answers), and :meth:`ToolClient.reconnect` opens a new session (a spawned server is
started again). :class:`~visioncreator.graph.TaskRunner` does both and resumes from the checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import anyio
from mcp.types import BlobResourceContents, TextContent, TextResourceContents

from visioncreator.graph.connection import Connection, ToolServerSpec, is_closed, is_outage, open_connection
from visioncreator.graph.errors import InvalidTaskError, ToolServerLost, ToolServerUnavailable
from visioncreator.graph.loop import run_on
from visioncreator.graph.mcp_compat import Client, MCPError, call_tool_unchecked, model_field
from visioncreator.policy import ToolSpec
from visioncreator.tool_servers import INSPECTION_META_KEY, INTERNAL_TOOLS, LOOK_META_KEY, SERVER_NAME, ToolName


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
    inspection: dict[str, Any] | None = None
    """The new image's inspection, when the call asked for it (``look=True``) and the server sent one."""


_T = TypeVar("_T")


@dataclass(kw_only=True)
class ToolClient:
    """An MCP client session to one tool server. Use as an async context manager.

    The session belongs to the event loop that entered the client (:attr:`loop`). Calls from
    another loop are handed to that one, and :meth:`blocking` runs a coroutine there from a thread
    without a loop (sync LangGraph nodes).
    """

    spec: ToolServerSpec | None = None
    """How to reach the server (ignored when ``server`` is given)."""
    server: Any = None
    """An in-process ``MCPServer`` to connect to directly (tests, embedding)."""
    trusted: bool | None = None
    """Skip the output-schema check of each result (see ``ToolServerSpec.trusted``). ``None``: trust
    an in-process ``server`` (one this process built) and otherwise what ``spec.trusted`` says."""
    _conn: Connection | None = field(default=None, init=False, repr=False)
    _tools: tuple[ToolSpec, ...] = field(default=(), init=False, repr=False)
    _reconnecting: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _generations: int = field(default=0, init=False, repr=False)
    _down: str | None = field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    @property
    def timeout_s(self) -> float:
        """Timeout of one tool call."""
        return self._spec.call_timeout_s

    @property
    def _trusted(self) -> bool:
        if self.trusted is not None:
            return self.trusted
        return self.server is not None or self._spec.trusted

    @property
    def _spec(self) -> ToolServerSpec:
        return self.spec or ToolServerSpec()

    @property
    def generation(self) -> int:
        """Which session is (or was last) live: 0 for the first, one more for each session opened since."""
        return self._conn.generation if self._conn is not None else self._generations - 1

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the session lives on (``None`` before the client is entered)."""
        return self._loop

    def blocking(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the session's loop from a thread that is not running it, and wait.

        What the sync forms of the agent's nodes do: the policy and the session live on the
        client's loop, the caller's context variables (LangGraph's config) go along.

        Raises:
            ToolServerLost: The client was never entered.
            RuntimeError: The session's loop is closed, or is the caller's own running loop.

        """
        if self._loop is None:
            coro.close()
            raise ToolServerLost(
                f"the tool server ({_describe(self._spec)}) is not connected: "
                "enter the client first (`async with ToolClient(...)`, or `open_agent_sync`)"
            )
        return run_on(self._loop, coro)

    def _elsewhere(self) -> asyncio.AbstractEventLoop | None:
        """The session's loop when the caller runs on another one (else ``None``: call directly)."""
        home = self._loop
        if home is None or asyncio.get_running_loop() is home or home.is_closed():
            return None
        return home

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._conn = await self._open()
        self._tools = tuple(
            ToolSpec(name=t.name, description=t.description or "", input_schema=dict(model_field(t, "input_schema")))
            for t in self._conn.listed.tools
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _open(self) -> Connection:
        spec = self._spec
        generation, self._generations = self._generations, self._generations + 1
        try:
            return await open_connection(spec, self.server, generation)
        except Exception as exc:
            raise ToolServerUnavailable(f"cannot reach the tool server ({_describe(spec)}): {_reason(exc)}") from exc

    async def reconnect(self, lost_generation: int) -> None:
        """Replace the session that was lost (``lost_generation``) with a new one.

        Many tasks may notice one outage: only the first reconnects, the others find the
        generation moved on. A spawned stdio server is started again; over HTTP a new session is
        opened at the same URL.

        Raises:
            ToolServerUnavailable: The server cannot be started or reached again.
        """
        if (home := self._elsewhere()) is not None:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.reconnect(lost_generation), home))
        async with self._reconnecting:
            if self._conn is not None and self._conn.generation != lost_generation:
                return
            old, self._conn = self._conn, None
            if old is not None:
                await old.close()
            try:
                self._conn = await self._open()
            except ToolServerUnavailable as exc:
                self._down = str(exc)
                raise
            self._down = None

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        """The server's tools, in the server's order."""
        return self._tools

    def policy_tools(self) -> tuple[ToolSpec, ...]:
        """The tools a policy may call (internal ones hidden)."""
        return tuple(t for t in self._tools if t.name not in INTERNAL_TOOLS)

    def _live(self) -> Connection:
        if self._conn is None:
            why = (
                f"it was lost, and reconnecting failed: {self._down}"
                if self._down
                else "use the client as `async with ToolClient(...)`"
            )
            raise ToolServerLost(
                f"the tool server ({_describe(self._spec)}) is not connected: {why}", generation=self.generation
            )
        return self._conn

    async def _request(self, what: str, send: Callable[[Client], Awaitable[_T]]) -> _T:
        """``send`` on the live session; an outage raises :class:`ToolServerLost`, other errors pass."""
        spec = self._spec
        conn = self._live()
        delay = spec.outage_backoff_s
        for attempt in range(spec.outage_retries + 1):
            try:
                return await send(conn.client)
            except (MCPError, anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                if not is_outage(exc):
                    raise
                if is_closed(exc) or attempt == spec.outage_retries:
                    behind = conn.transport_failure()
                    reason = _reason(exc) + (f" ({behind})" if behind else "")
                    raise ToolServerLost(
                        f"the tool server ({_describe(spec)}) was lost during {what}: {reason}",
                        generation=conn.generation,
                    ) from exc
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def looks_in_call(self) -> bool:
        """Whether the connected server inspects a new image in the image call itself (our tool server does)."""
        info = self._conn.client.server_info if self._conn is not None else None
        return info is not None and info.name == SERVER_NAME

    async def call(self, name: str, arguments: Mapping[str, Any], *, look: bool = False) -> ToolOutcome:
        """Call a tool. Tool errors come back as ``ok=False``; a lost server raises :class:`ToolServerLost`.

        ``look`` asks an image tool to inspect its new image in the same round trip
        (:data:`~visioncreator.tool_servers.LOOK_META_KEY`); the outcome's ``inspection`` then holds
        what ``inspect_image`` would say. A server that does not know the key sends none.
        """
        if (home := self._elsewhere()) is not None:
            hop = asyncio.run_coroutine_threadsafe(self.call(name, arguments, look=look), home)
            return await asyncio.wrap_future(hop)
        started = time.perf_counter()

        trusted = self._trusted
        meta: Any = {LOOK_META_KEY: True} if look else None

        async def send(client: Client) -> Any:
            with anyio.fail_after(self.timeout_s):
                if trusted:
                    # The session's own request, without the SDK's output-schema validation of the result.
                    return await call_tool_unchecked(client, name, dict(arguments), meta)
                return await client.call_tool(name, dict(arguments), meta=meta)

        try:
            result = await self._request(f"a {name} call", send)
        except TimeoutError:
            return ToolOutcome(
                ok=False, error=f"tool {name} timed out after {self.timeout_s:g} s", latency_s=self.timeout_s
            )
        except MCPError as exc:
            return ToolOutcome(ok=False, error=f"{name}: {exc}", latency_s=time.perf_counter() - started)
        latency = time.perf_counter() - started
        text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
        if model_field(result, "is_error"):
            return ToolOutcome(ok=False, error=text or f"{name} failed", latency_s=latency)
        structured = model_field(result, "structured_content")
        if structured is None and text:
            try:
                parsed = json.loads(text)
                structured = parsed if isinstance(parsed, dict) else {"text": text}
            except json.JSONDecodeError:
                structured = {"text": text}
        seen = (result.meta or {}).get(INSPECTION_META_KEY) if look else None
        return ToolOutcome(
            ok=True,
            structured=dict(structured or {}),
            latency_s=latency,
            inspection=seen if isinstance(seen, dict) else None,
        )

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
        """The synthetic ground truth of an image, or None when the server has none (a lost server raises)."""
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
        if (home := self._elsewhere()) is not None:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._read(uri), home))

        async def send(client: Client) -> Any:
            with anyio.fail_after(self.timeout_s):
                return await client.read_resource(uri)

        result = await self._request(f"a read of {uri}", send)
        return list(result.contents)


def _reason(exc: BaseException) -> str:
    """An exception as text that is never empty (some transport errors have no message)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe(spec: ToolServerSpec) -> str:
    return spec.url or " ".join([spec.command, *spec.args])
