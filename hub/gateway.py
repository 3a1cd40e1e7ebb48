"""The gateway: everything one process holds, and the life of one client stream.

`Gateway` is an async context manager over the process's Redis client, its one
subscription (inside `Fanout`), the history reader, the live streams, and the
heartbeat that keeps idle streams (and their proxies) awake and finds
half-open connections.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError
from starlette.types import Receive, Send

from hub import sse, topology
from hub.client_connection import ClientConnection, Ending
from hub.config import Settings
from hub.events import StreamId
from hub.fanout import Fanout, Resume, Unavailable
from hub.history import History
from hub.metrics import Metrics
from hub.primaries import Primaries
from hub.topics import Keys

log = logging.getLogger("hub.gateway")

TRUNCATED_HEADER = "Hub-Replay-Truncated"
REDIS_CONNECTIONS = 16
"""Connections per Redis primary for history reads."""
HEARTBEAT_STEPS = 20
"""Slices of the streams that beat one after the other over one heartbeat interval."""
REPLAY_PAGE_BYTES = 262_144
"""Most entry bytes in one history page: a resuming client that stops reading pins one."""


@dataclass(frozen=True)
class Figures:
    """What a gateway reports about itself (`/metrics` shows them)."""

    connected_clients: int
    topics: int
    redis_subscribed: bool
    redis_primaries: int
    events_received: int
    events_sent: int
    events_replayed: int
    bytes_sent: int
    gaps_filled: int
    history_reads: int
    slow_client_disconnects: int
    redis_reconnects: int
    redis_topic_moves: int
    malformed_entries_skipped: int


@dataclass
class Opened:
    """A stream that is registered everywhere and ready to start its response."""

    client: ClientConnection
    resumes: list[Resume]

    @property
    def truncated(self) -> list[str]:
        return [resume.topic.name for resume in self.resumes if resume.truncated]


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        keys = Keys(settings.key_prefix)
        self.primaries = Primaries(
            topology.from_url(settings.redis_url, settings.redis_timeout_seconds),
            REDIS_CONNECTIONS,
            settings.redis_timeout_seconds,
        )
        self.history = History(
            self.primaries,
            keys,
            settings.replay_page,
            min(settings.client_buffer_bytes, REPLAY_PAGE_BYTES),
        )
        self.metrics = Metrics()
        self.fanout = Fanout(
            self.primaries,
            keys,
            self.history,
            settings.redis_timeout_seconds,
            self.metrics.observe_delivery,
        )
        self.metrics.watch(self.figures)
        self.streams: set[ClientConnection] = set()
        self._bytes_sent_by_ended = 0
        self.slow_disconnects = 0
        self._heartbeat: asyncio.Task[None] | None = None
        self._stall_sweep: asyncio.Task[None] | None = None
        self.closing: list[Callable[[], None]] = []
        """Called as the gateway closes, by parts built on it (Mercure's sequencer)."""

    async def __aenter__(self) -> Gateway:
        await self.primaries.__aenter__()
        await self.fanout.__aenter__()
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        self._stall_sweep = asyncio.create_task(self._sweep_stalled(), name="stall sweep")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.end_all()
        for close in self.closing:
            close()
        for task in (self._heartbeat, self._stall_sweep):
            if task is not None:
                task.cancel()
        await self.fanout.__aexit__(*exc_info)
        await self.primaries.__aexit__(*exc_info)

    @property
    def subscribed(self) -> bool:
        """Whether the gateway's Redis subscription is up (no round trip to Redis)."""
        return self.fanout.subscription.connected

    async def ready(self) -> str | None:
        """None when this gateway can serve streams, else why not."""
        if not self.subscribed:
            return "redis subscription is down"
        try:
            await self.primaries.ping()
        except (RedisError, OSError) as exc:
            return f"redis does not answer: {exc}"
        return None

    def end_all(self) -> None:
        """End every stream cleanly, asking each browser to come back after a jittered delay."""
        for client in list(self.streams):
            client.end(Ending.SHUTDOWN, sse.retry(self._jittered_retry(0.1, 1.0)))

    async def open(self, topics: tuple[str, ...], after: list[StreamId] | None) -> Opened:
        """Register a stream with its topics; raise `Unavailable` if Redis is not there."""
        client = ClientConnection(
            topics,
            [(0, 0)] * len(topics),
            self.settings.client_buffer_bytes,
            self.fanout.flusher,
            self._ended,
        )
        self.streams.add(client)
        try:
            states = await self.fanout.acquire(topics)
            if after is None:
                self.fanout.attach(client, states)
                return Opened(client, [])
            return Opened(client, await self.fanout.begin_resume(client, states, after))
        except RedisError as exc:
            client.end(Ending.DISCONNECTED)
            raise Unavailable(str(exc)) from exc
        except BaseException:
            client.end(Ending.DISCONNECTED)
            raise

    def connect(self, on_end: Callable[[ClientConnection, Ending], None]) -> ClientConnection:
        """A stream that belongs to no native topic (a Mercure one), with the heartbeats,
        limits and shutdown of every stream; `on_end` hears of its end too."""

        def ended(client: ClientConnection, ending: Ending) -> None:
            self._ended(client, ending)
            on_end(client, ending)

        client = ClientConnection(
            (), [], self.settings.client_buffer_bytes, self.fanout.flusher, ended
        )
        self.streams.add(client)
        return client

    def serve_connection(
        self, client: ClientConnection, send: Send, receive: Receive
    ) -> Awaitable[None]:
        """Write a stream until it ends, starting with the reconnection delay it is to use."""
        client.push(sse.retry(self.retry_hint()))
        return client.run(send, receive)

    def serve(self, opened: Opened, send: Send, receive: Receive) -> Awaitable[None]:
        """Write the stream until it ends; the response has started.

        Not a coroutine itself: a frame held for each open stream's life costs memory.
        """
        client = opened.client
        # The replay holds the first pages only while it needs them, not for the stream's life.
        resumes, opened.resumes = opened.resumes, []
        if not resumes:
            return self.serve_connection(client, send, receive)
        client.push(sse.retry(self.retry_hint()))
        return self._serve_replaying(client, resumes, send, receive)

    async def _serve_replaying(
        self, client: ClientConnection, resumes: list[Resume], send: Send, receive: Receive
    ) -> None:
        replay = asyncio.create_task(self._replay(client, resumes))
        try:
            await client.run(send, receive)
        finally:
            replay.cancel()

    async def _replay(self, client: ClientConnection, resumes: list[Resume]) -> None:
        try:
            for resume in resumes:
                await self.fanout.finish_resume(client, resume)
        except (RedisError, OSError) as exc:
            log.warning("replay failed, ending the stream so the client resumes: %s", exc)
            client.end(Ending.SHUTDOWN)

    def figures(self) -> Figures:
        counters, subscription = self.fanout.counters, self.fanout.subscription
        return Figures(
            connected_clients=len(self.streams),
            topics=len(self.fanout.topic_names()),
            redis_subscribed=subscription.connected,
            redis_primaries=subscription.primaries,
            events_received=counters.events_received,
            events_sent=counters.deliveries,
            events_replayed=counters.events_replayed,
            bytes_sent=self._bytes_sent_by_ended
            + sum(client.bytes_sent for client in self.streams),
            gaps_filled=counters.gaps_filled,
            history_reads=self.history.reads_done,
            slow_client_disconnects=self.slow_disconnects,
            redis_reconnects=subscription.reconnects,
            redis_topic_moves=subscription.moves,
            malformed_entries_skipped=counters.malformed_skipped + self.history.malformed_skipped,
        )

    def _ended(self, client: ClientConnection, ending: Ending) -> None:
        self.streams.discard(client)
        self._bytes_sent_by_ended += client.bytes_sent
        self.fanout.detach(client)
        if ending is Ending.SLOW:
            self.slow_disconnects += 1
            log.warning(
                "slow client dropped (topics %s)",
                ",".join(client.topics),
                extra={"event": "slow_client_dropped"},
            )

    def retry_hint(self) -> int:
        """The reconnection delay for a new stream, with per-connection jitter."""
        return self._jittered_retry(0.5, 1.5)

    def _jittered_retry(self, low: float, high: float) -> int:
        return max(100, int(self.settings.retry_ms * random.uniform(low, high)))

    async def _sweep_stalled(self) -> None:
        stall = self.settings.client_stall_seconds
        while True:
            await asyncio.sleep(min(1.0, stall / 4))
            self.fanout.flusher.drop_stalled(stall)

    async def _beat(self) -> None:
        """Each stream is looked at once per interval, and beats if it sent nothing since.

        The streams are spread over the interval in `HEARTBEAT_STEPS` slices: ten
        thousand writes at once would hold every event back while they are made.
        """
        step = self.settings.heartbeat_seconds / HEARTBEAT_STEPS
        while True:
            clients = list(self.streams)
            for first in range(HEARTBEAT_STEPS):
                await asyncio.sleep(step)
                for client in clients[first::HEARTBEAT_STEPS]:
                    client.heartbeat_if_quiet()
