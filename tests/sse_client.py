"""A test's view of the hub from outside: SSE clients (httpx-sse) and a publisher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx
from httpx_sse import aconnect_sse

from hub.config import Settings
from publisher import AsyncPublisher


@dataclass
class Received:
    id: str
    event: str
    data: str


@dataclass
class Listener:
    """One SSE connection that records every event it receives, in order."""

    base_url: str
    topics: Sequence[str]
    last_event_id: str = ""
    use_query: bool = False
    events: list[Received] = field(default_factory=list)
    headers: httpx.Headers | None = None
    status: int | None = None
    ended: bool = False
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        params: list[tuple[str, str]] = [("topic", topic) for topic in self.topics]
        headers = {}
        if self.last_event_id and self.use_query:
            params.append(("last_event_id", self.last_event_id))
        elif self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        timeout = httpx.Timeout(10.0, read=None)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as client:
            async with aconnect_sse(client, "GET", "/events", params=params, headers=headers) as source:
                self.status = source.response.status_code
                self.headers = source.response.headers
                self.connected.set()
                if self.status != 200:
                    return
                async for sse in source.aiter_sse():
                    if not sse.data:
                        # httpx-sse also yields a blank line after a comment or a bare
                        # `retry:` as an event (a browser dispatches none); the tests
                        # publish no empty data, so these are skipped.
                        continue
                    self.events.append(Received(sse.id, sse.event, sse.data))
        self.ended = True

    @property
    def data(self) -> list[str]:
        return [event.data for event in self.events if event.event == "message"]

    @property
    def cursor(self) -> str:
        return self.events[-1].id if self.events else self.last_event_id

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def wait_for(self, count: int, timeout: float = 20.0, any_type: bool = False) -> None:
        """Wait until `count` events of the default type (or of any type) arrived, or the stream ended."""
        async with asyncio.timeout(timeout):
            while len(self.events if any_type else self.data) < count and not self.ended:
                if self._task is not None and self._task.done():
                    self._task.result()
                    return
                await asyncio.sleep(0.01)

    async def wait_ended(self, timeout: float = 20.0) -> None:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task


@contextlib.asynccontextmanager
async def listening(
    base_url: str, topics: Sequence[str], count: int = 1, last_event_id: str = ""
) -> AsyncIterator[list[Listener]]:
    """`count` connected listeners, closed on exit."""
    listeners = [Listener(base_url, topics, last_event_id).start() for _ in range(count)]
    try:
        for listener in listeners:
            await listener.wait_connected()
        yield listeners
    finally:
        for listener in listeners:
            await listener.close()


@contextlib.asynccontextmanager
async def publisher(redis_url: str, key_prefix: str, **settings: object) -> AsyncIterator[AsyncPublisher]:
    hub = AsyncPublisher(Settings(redis_url=redis_url, key_prefix=key_prefix, **settings))  # type: ignore[arg-type]
    try:
        yield hub
    finally:
        await hub.aclose()


@dataclass
class ReconnectingListener:
    """A client that behaves like a browser's EventSource.

    When its stream ends or breaks it waits the `retry:` delay the hub sent
    last, then reconnects with `Last-Event-ID` set to the last ID it saw.
    """

    base_url: str
    topics: Sequence[str]
    last_event_id: str = ""
    events: list[Received] = field(default_factory=list)
    connections: int = 0
    retry_ms: int = 3000
    _task: asyncio.Task[None] | None = None

    def start(self) -> ReconnectingListener:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        params = [("topic", topic) for topic in self.topics]
        timeout = httpx.Timeout(5.0, read=30.0)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as client:
            while True:
                headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
                try:
                    async with aconnect_sse(client, "GET", "/events", params=params, headers=headers) as source:
                        if source.response.status_code == 200:
                            self.connections += 1
                            async for sse in source.aiter_sse():
                                if sse.retry is not None:
                                    self.retry_ms = sse.retry
                                if sse.data:
                                    self.events.append(Received(sse.id, sse.event, sse.data))
                                    self.last_event_id = sse.id
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(self.retry_ms / 1000)

    @property
    def data(self) -> list[str]:
        return [event.data for event in self.events if event.event == "message"]

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.data) < count:
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def connected(
    clients: list[ReconnectingListener], timeout: float = 20.0
) -> list[ReconnectingListener]:
    """`clients`, once every one of them has its stream open."""
    async with asyncio.timeout(timeout):
        while any(client.connections == 0 for client in clients):
            await asyncio.sleep(0.05)
    return clients


def count_losses(expected: Sequence[str], received: Sequence[str]) -> tuple[int, int, bool]:
    """(lost, duplicated, in order) of what one client received against what was published."""
    seen = set(received)
    lost = sum(1 for item in expected if item not in seen)
    duplicated = len(received) - len(seen)
    in_order = list(dict.fromkeys(received)) == [item for item in expected if item in seen]
    return lost, duplicated, in_order


def metric(text: str, name: str) -> float:
    """One sample's value from a Prometheus text page (`/metrics`)."""
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))
