"""What each MCP session has in flight over HTTP: how many requests, and which JSON-RPC ids.

The SDK keys a session's response streams by JSON-RPC id: a second request reusing an id that is
still in flight replaces the first one's stream, so one of them is never answered and its body
stays held until the client disconnects. Refusing the duplicate up front keeps both bounded.
Entries exist only while a session has requests in flight, so made-up session ids cost nothing
once their requests end.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

__all__ = ["SessionRequests", "id_key"]


def id_key(request_id: object) -> Hashable:
    """A JSON-RPC id as a key that tells ``1``, ``1.0``, ``"1"`` and ``true`` apart."""
    return (type(request_id).__name__, request_id if isinstance(request_id, Hashable) else repr(request_id))


class SessionRequests:
    """Per-session in-flight request counts and claimed JSON-RPC ids.

    Args:
        max_per_session: Requests one session may have in flight at once
            (``ServerSettings.max_session_requests``).
    """

    def __init__(self, max_per_session: int) -> None:
        self.max_per_session = max_per_session
        self._count: dict[str, int] = {}
        self._ids: dict[str, set[Hashable]] = {}

    def enter(self, session: str) -> bool:
        """Count one more request of ``session``; False (nothing counted) when it already has the most."""
        count = self._count.get(session, 0)
        if count >= self.max_per_session:
            return False
        self._count[session] = count + 1
        return True

    def leave(self, session: str) -> None:
        """Count one request of ``session`` as done."""
        count = self._count[session] - 1
        if count:
            self._count[session] = count
        else:
            del self._count[session]
            self._ids.pop(session, None)

    def claim(self, session: str, request_ids: Iterable[object]) -> object | None:
        """Claim ``request_ids`` for ``session``, all or none.

        Returns:
            None when all were claimed; else the first id already in flight (or repeated in
            ``request_ids``), and nothing is claimed.
        """
        held = self._ids.setdefault(session, set())
        keys: list[Hashable] = []
        for request_id in request_ids:
            key = id_key(request_id)
            if key in held or key in keys:
                return request_id
            keys.append(key)
        held.update(keys)
        return None

    def holds(self, session: str, request_id: object) -> bool:
        """Whether ``session`` has a request with ``request_id`` in flight."""
        return id_key(request_id) in self._ids.get(session, ())

    def release(self, session: str, request_ids: Iterable[object]) -> None:
        """Give back ids claimed earlier."""
        held = self._ids.get(session)
        if held is not None:
            held.difference_update(id_key(request_id) for request_id in request_ids)
