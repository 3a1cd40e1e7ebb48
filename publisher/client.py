"""The publisher library: one call appends an event and announces it.

    with Publisher.from_env() as hub:
        event_id = hub.publish("news", "hello")

    async with AsyncPublisher.from_env() as hub:
        event_id = await hub.publish("news", "hello")

Both run `hub/publish.lua` with EVALSHA on the primary that owns the topic
(one server, the Sentinel-named primary, or the Cluster node of the topic's
slot), so the ID returned is the stream entry ID that subscribers see as the
event's `id`. With `HUB_PUBLISH_WAIT_REPLICAS`, `WAIT` follows on the same
connection, and a publish is acknowledged only once that many replicas hold
the event. `Publisher` runs an `AsyncPublisher` on a private event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Coroutine
from importlib.resources import files
from types import TracebackType
from typing import Any, TypeVar

from redis.exceptions import NoScriptError, RedisError

from hub import topology
from hub.config import Settings
from hub.events import BINARY_MEDIA_TYPE, binary_data, check_data, check_event_type
from hub.primaries import Command, Primaries
from hub.topics import Keys, check_topic
from hub.topology import Node

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
PUBLISH_SCRIPT = files("hub").joinpath("publish.lua").read_text()
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()
CONNECTIONS_PER_PRIMARY = 64
T = TypeVar("T")


class NotReplicated(RedisError):
    """The event was written, but fewer replicas than asked for hold it yet."""

    def __init__(self, event_id: str, replicas: int, wanted: int, waited_ms: int) -> None:
        super().__init__(
            f"event {event_id} reached {replicas} of {wanted} replicas in {waited_ms} ms;"
            " it is not acknowledged and may be lost if its primary fails"
        )
        self.event_id = event_id


def script_call(
    settings: Settings, topic: str, data: str, event_type: str, announce: str = "PUBLISH"
) -> tuple[str, list[str | int]]:
    """Check one event; the publish script's key and arguments for it (see hub/publish.lua)."""
    check_topic(topic)
    check_event_type(event_type)
    check_data(data, settings.max_event_bytes)
    keys = Keys(settings.key_prefix)
    return keys.stream(topic), [
        data,
        event_type,
        settings.retention_maxlen,
        settings.retention_seconds * 1000,
        keys.channel(topic),
        announce,
    ]


class AsyncPublisher:
    """Publishes events from asyncio code. Use it as an async context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._primaries = Primaries(
            topology.from_url(settings.redis_url or DEFAULT_REDIS_URL, settings.redis_timeout_seconds),
            CONNECTIONS_PER_PRIMARY,
            settings.redis_timeout_seconds,
        )
        self._announce = "SPUBLISH" if self._primaries.topology.sharded else "PUBLISH"
        # Primaries the script is known to be loaded on. It is loaded before the first
        # EVALSHA, not on NOSCRIPT: the embedded development server (fakeredis) answers
        # an unknown SHA with an error redis-py does not recognise.
        self._loaded: set[str] = set()

    @classmethod
    def from_env(cls) -> AsyncPublisher:
        return cls(Settings.from_env())

    async def publish(self, topic: str, data: str, event_type: str = "") -> str:
        """Append and announce one event; return its ID."""
        key, args = script_call(self.settings, topic, data, event_type, self._announce)
        wait = self.settings.publish_wait_replicas

        used: list[Node] = []

        def commands(node: Node) -> list[Command]:
            used.append(node)
            batch: list[Command] = [("EVALSHA", PUBLISH_SHA, 1, key, *args)]
            if node.name not in self._loaded:
                batch.insert(0, ("SCRIPT", "LOAD", PUBLISH_SCRIPT))
            if wait:
                batch.append(("WAIT", wait, self.settings.publish_wait_ms))
            return batch

        try:
            results = await self._primaries.run(key, commands, idempotent=False)
        except NoScriptError:  # a restarted or promoted primary lost its script cache
            self._loaded.clear()
            results = await self._primaries.run(key, commands, idempotent=False)
        self._loaded.add(used[-1].name)
        if wait:
            *results, replicas = results
        event_id = _text(results[-1])  # after SCRIPT LOAD's answer, if it was sent
        if wait and int(replicas) < wait:
            raise NotReplicated(event_id, int(replicas), wait, self.settings.publish_wait_ms)
        return event_id

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
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
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
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
