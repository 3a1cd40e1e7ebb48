"""Limits on requests, checked before any endpoint runs: size, and requests per client.

`RequestLimits` refuses a request whose target or headers are over their
limits (414, 431) with the exact limit in the reason; the connection guard
(`hub/connection_guard.py`) has already cut off those that never end.
`ClientSlots` counts the streams and publish requests each client address
holds, against `HUB_MAX_STREAMS_PER_CLIENT`.
"""

from __future__ import annotations

from collections import Counter

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class OverLimit(Exception):
    """A client address already holds as many requests as it may."""


class ClientSlots:
    """Open streams and publish requests per client address, against one limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()

    def hold(self, scope: Scope) -> _Slot:
        """A slot for the request's client, held in a `with` block; `OverLimit` if none is free."""
        client = scope.get("client")
        address = client[0] if client else ""
        if self.limit and self._held[address] >= self.limit:
            raise OverLimit(f"over the limit of {self.limit} streams per client")
        self._held[address] += 1
        return _Slot(self._held, address)


class _Slot:
    # A small object rather than a generator-based context manager: each open stream
    # holds one for its life.
    __slots__ = ("_address", "_held")

    def __init__(self, held: Counter[str], address: str) -> None:
        self._held = held
        self._address = address

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        self._held[self._address] -= 1
        if not self._held[self._address]:
            del self._held[self._address]


class RequestLimits:
    """ASGI middleware: 414 and 431 for requests over the size limits."""

    def __init__(self, app: ASGIApp, max_url: int, max_headers: int) -> None:
        self.app = app
        self.max_url = max_url
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            url = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            if url > self.max_url:
                reason = f"the request target is over the limit of {self.max_url} bytes"
                await reply(scope, receive, send, reason, 414)
                return
            headers = sum(len(name) + len(value) for name, value in scope["headers"])
            if headers > self.max_headers:
                reason = f"the request headers are over the limit of {self.max_headers} bytes"
                await reply(scope, receive, send, reason, 431)
                return
        await self.app(scope, receive, send)


async def reply(scope: Scope, receive: Receive, send: Send, reason: str, status: int) -> None:
    response = PlainTextResponse(reason + "\n", status_code=status)
    if status == 503:
        response.headers["retry-after"] = "1"
    if status == 401:
        response.headers["www-authenticate"] = "Bearer"
    await response(scope, receive, send)
