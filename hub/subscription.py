"""The gateway process's one Redis pub/sub connection, shared by all its clients.

It owns its reconnect loop rather than trusting the client library's (redis-py
has a long record of subscriptions that do not come back after a Redis
restart: redis/redis-py#2089, #2417, #3979). After every (re)connect it
subscribes to every wanted topic again, and each confirmation tells the
listener, which backfills from the stream whatever went by meanwhile. A
subscription that goes silent is found with `PING` and a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from typing import Protocol

import redis.asyncio
from redis.exceptions import RedisError

from hub.topics import Keys

log = logging.getLogger("hub.subscription")


class Listener(Protocol):
    def on_subscribed(self, topic: str) -> None: ...
    def on_message(self, topic: str, message: bytes) -> None: ...
    def on_connection_lost(self) -> None: ...


class Subscription:
    def __init__(self, redis_url: str, keys: Keys, listener: Listener, timeout: float) -> None:
        # RESP2 keeps pub/sub messages plain replies, whatever the client's default.
        self._pool = redis.asyncio.ConnectionPool.from_url(
            redis_url, protocol=2, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._keys = keys
        self._listener = listener
        self._timeout = timeout
        self._wanted: set[str] = set()
        self._connection: redis.asyncio.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.reconnects = 0
        self._heard = False

    async def __aenter__(self) -> Subscription:
        self._task = asyncio.create_task(self._run(), name="redis-subscription")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._pool.disconnect()

    async def subscribe(self, topic: str) -> None:
        """Want `topic`; the listener hears `on_subscribed` once Redis confirms."""
        self._wanted.add(topic)
        await self._send("SUBSCRIBE", self._keys.channel(topic))

    async def unsubscribe(self, topic: str) -> None:
        self._wanted.discard(topic)
        await self._send("UNSUBSCRIBE", self._keys.channel(topic))

    async def _send(self, *command: str) -> None:
        connection = self._connection
        if connection is None or not self.connected:
            return  # the reconnect loop subscribes to everything wanted
        try:
            await connection.send_command(*command)
        except (RedisError, OSError) as exc:
            log.debug("sending %s failed (%s); the reconnect loop takes over", command[0], exc)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            connection: redis.asyncio.Connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
                self._connection = connection
                self.connected = True
                if self._wanted:
                    channels = [self._keys.channel(topic) for topic in self._wanted]
                    await connection.send_command("SUBSCRIBE", *channels)
                log.info("redis subscription up", extra={"event": "redis_up"})
                delay = 0.05
                await self._read(connection)
            except (RedisError, OSError) as exc:
                if self.connected:
                    self.reconnects += 1
                    log.warning(
                        "redis subscription lost: %s", exc, extra={"event": "redis_lost"}
                    )
                    self._listener.on_connection_lost()
            finally:
                self.connected = False
                self._connection = None
                await connection.disconnect()
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)

    async def _read(self, connection: redis.asyncio.Connection) -> None:
        watchdog = asyncio.create_task(self._watch(connection))
        try:
            while True:
                # No deadline per read (it costs more than the parsing at high rates):
                # the watchdog ends a silent connection instead.
                reply = await connection.read_response(timeout=math.inf)
                self._heard = True
                try:
                    self._dispatch(reply)
                except Exception:  # a bug in handling one message must not stop the feed
                    log.exception("handling a message from redis failed")
        finally:
            watchdog.cancel()

    async def _watch(self, connection: redis.asyncio.Connection) -> None:
        """PING a connection that has been quiet; drop it if the answer does not come in time."""
        idle = min(1.0, self._timeout / 2)
        while True:
            self._heard = False
            await asyncio.sleep(idle)
            if self._heard:
                continue
            await connection.send_command("PING")
            await asyncio.sleep(self._timeout)
            if not self._heard:
                log.warning("redis subscription silent: no reply to PING in %s s", self._timeout)
                await connection.disconnect()  # the reader fails and the loop reconnects
                return

    def _dispatch(self, reply: list[bytes]) -> None:
        kind = reply[0]
        if kind == b"message":
            self._listener.on_message(self._keys.topic_of_channel(reply[1].decode()), reply[2])
        elif kind == b"subscribe":
            topic = self._keys.topic_of_channel(reply[1].decode())
            if topic in self._wanted:
                self._listener.on_subscribed(topic)
