"""The publisher library: one call appends an event and announces it.

    with Publisher.from_env() as hub:
        event_id = hub.publish("news", "hello")

    async with AsyncPublisher.from_env() as hub:
        event_id = await hub.publish("news", "hello")

Both run `hub/publish.lua` with EVALSHA (loading it on first use), so the ID
returned is the stream entry ID that subscribers see as the event's `id`.
"""

from __future__ import annotations

from importlib.resources import files
from types import TracebackType
from typing import Any

import redis
import redis.asyncio

from hub.config import Settings
from hub.events import BINARY_MEDIA_TYPE, binary_data, check_data, check_event_type
from hub.topics import Keys, check_topic

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
PUBLISH_SCRIPT = files("hub").joinpath("publish.lua").read_text()


# The script is loaded before its first EVALSHA, not on NOSCRIPT: the embedded
# development server (fakeredis) answers an unknown SHA with an error redis-py does
# not recognise. redis-py still reloads it on NOSCRIPT after a Redis restart.


class _Calls:
    """What the sync and async publishers share: checks and the script's arguments."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis_url = settings.redis_url or DEFAULT_REDIS_URL

    def arguments(self, topic: str, data: str, event_type: str) -> tuple[list[str], list[Any]]:
        check_topic(topic)
        check_event_type(event_type)
        check_data(data, self.settings.max_event_bytes)
        retention = [self.settings.retention_maxlen, self.settings.retention_seconds * 1000]
        return [self.keys.stream(topic)], [data, event_type, *retention, self.keys.channel(topic)]


class Publisher:
    """Publishes events synchronously. Use it as a context manager."""

    def __init__(self, settings: Settings) -> None:
        self._calls = _Calls(settings)
        self._redis = redis.Redis.from_url(self._calls.redis_url)
        self._script = self._redis.register_script(PUBLISH_SCRIPT)
        self._loaded = False

    @classmethod
    def from_env(cls) -> Publisher:
        return cls(Settings.from_env())

    def publish(self, topic: str, data: str, event_type: str = "") -> str:
        """Append and announce one event; return its ID."""
        keys, args = self._calls.arguments(topic, data, event_type)
        if not self._loaded:
            self._redis.script_load(PUBLISH_SCRIPT)
            self._loaded = True
        return _text(self._script(keys=keys, args=args))

    def publish_bytes(
        self, topic: str, payload: bytes, media_type: str = BINARY_MEDIA_TYPE, name: str = ""
    ) -> str:
        return self.publish(topic, binary_data(payload, media_type, name))

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncPublisher:
    """Publishes events from asyncio code. Use it as an async context manager."""

    def __init__(self, settings: Settings) -> None:
        self._calls = _Calls(settings)
        self._redis = redis.asyncio.Redis.from_url(self._calls.redis_url)
        self._script = self._redis.register_script(PUBLISH_SCRIPT)
        self._loaded = False

    @classmethod
    def from_env(cls) -> AsyncPublisher:
        return cls(Settings.from_env())

    async def publish(self, topic: str, data: str, event_type: str = "") -> str:
        """Append and announce one event; return its ID."""
        keys, args = self._calls.arguments(topic, data, event_type)
        if not self._loaded:
            await self._redis.script_load(PUBLISH_SCRIPT)
            self._loaded = True
        return _text(await self._script(keys=keys, args=args))

    async def publish_bytes(
        self, topic: str, payload: bytes, media_type: str = BINARY_MEDIA_TYPE, name: str = ""
    ) -> str:
        return await self.publish(topic, binary_data(payload, media_type, name))

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
