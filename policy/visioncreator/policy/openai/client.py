"""What every client of an OpenAI-compatible server shares: one lazily made HTTP client, closed on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx

__all__ = ["ClosingClient"]


class ClosingClient:
    """An ``async with`` owner of ``self._client`` (an :class:`httpx.AsyncClient` made on first use)."""

    _client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
