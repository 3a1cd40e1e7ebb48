"""The publisher library: one call appends an event and announces it.

    with Publisher.from_env() as hub:
        event_id = hub.publish("news", "hello")

    async with AsyncPublisher.from_env() as hub:
        event_id = await hub.publish("news", "hello")
        ids = await hub.publish_many([("news", "one"), ("news", "two", "greeting")])

Both run the write path of `hub/publish.py` on Redis clients of their own, so
the ID returned is the stream entry ID that subscribers see as the event's
`id`. Publishes made at the same time (asyncio tasks, or threads sharing a
`Publisher`) share round trips to Redis; `publish_many` sends a batch as one
pipeline per primary. `Publisher` runs an `AsyncPublisher` on a private event
loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from hub import topology
from hub.config import Settings
from hub.events import BINARY_MEDIA_TYPE, binary_data
from hub.primaries import Primaries
from hub.publish import EventWriter

Events = Iterable[tuple[str, str] | tuple[str, str, str]]
"""Events to publish together, each `(topic, data)` or `(topic, data, event_type)`."""

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
CONNECTIONS_PER_PRIMARY = 64
T = TypeVar("T")


class AsyncPublisher:
    """Publishes events from asyncio code. Use it as an async context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._primaries = Primaries(
            topology.from_url(
                settings.redis_url or DEFAULT_REDIS_URL, settings.redis_timeout_seconds
            ),
            CONNECTIONS_PER_PRIMARY,
            settings.redis_timeout_seconds,
        )
        self._writer = EventWriter(settings, self._primaries)

    @classmethod
    def from_env(cls) -> AsyncPublisher:
        return cls(Settings.from_env())

    async def publish(self, topic: str, data: str, event_type: str = "") -> str:
        """Append and announce one event; return its ID."""
        return await self._writer.publish(topic, data, event_type)

    async def publish_many(self, events: Events) -> list[str]:
        """Append and announce several events, pipelined; their IDs, in order.

        Every event is checked first: an invalid one raises `InvalidTopic` or
        `InvalidEvent` before any is sent. The events of a topic are written in
        the order given. If some cannot be published, `NotAllPublished` is raised
        once the others are, its `results` holding each event's ID or error.
        """
        return await self._writer.publish_many(events)

    async def publish_bytes(
        self, topic: str, payload: bytes, media_type: str = BINARY_MEDIA_TYPE, name: str = ""
    ) -> str:
        return await self.publish(topic, binary_data(payload, media_type, name))

    async def ping(self) -> None:
        """Raise unless every primary answers."""
        await self._primaries.ping()

    async def aclose(self) -> None:
        await self._primaries.__aexit__(None, None, None)

    async def __aenter__(self) -> AsyncPublisher:
        await self._primaries.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Publisher:
    """Publishes events synchronously, from any thread. Use it as a context manager."""

    def __init__(self, settings: Settings) -> None:
        self._publisher = AsyncPublisher(settings)
        # Its own loop in its own thread: callable from plain code and from code that
        # runs inside some other event loop alike.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hub-publisher", daemon=True
        )
        self._thread.start()

    @classmethod
    def from_env(cls) -> Publisher:
        return cls(Settings.from_env())

    def publish(self, topic: str, data: str, event_type: str = "") -> str:
        """Append and announce one event; return its ID."""
        return self._run(self._publisher.publish(topic, data, event_type))

    def publish_many(self, events: Events) -> list[str]:
        """Append and announce several events, pipelined; their IDs, in order (see
        `AsyncPublisher.publish_many`)."""
        return self._run(self._publisher.publish_many(list(events)))  # read in this thread

    def publish_bytes(
        self, topic: str, payload: bytes, media_type: str = BINARY_MEDIA_TYPE, name: str = ""
    ) -> str:
        return self.publish(topic, binary_data(payload, media_type, name))

    def ping(self) -> None:
        """Raise unless every primary answers."""
        self._run(self._publisher.ping())

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._publisher.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
