"""Mercure's part of a gateway: publishing updates, and the life of a Mercure stream.

It shares everything with the native API: the Redis clients, the one
subscription (the partitions are native topics of the hub's own), the history
reader, the client connections with their buffers, heartbeats and shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError
from starlette.types import Receive, Send

from hub.auth import Grant
from hub.client_connection import ClientConnection, Ending
from hub.events import parse_id
from hub.fanout import Unavailable
from hub.gateway import Gateway
from hub.mercure.dispatch import Dispatcher, MercureStream, Replayer
from hub.mercure.matchers import TopicFilter
from hub.mercure.record import (
    BEFORE_ALL,
    EARLIEST,
    InvalidUpdate,
    Position,
    Stored,
    Update,
    hub_id,
    parse_hub_id,
    partition_of,
    partition_topic,
    position,
)
from hub.mercure.sequencer import Sequencer
from hub.primaries import Command
from hub.publish import Call, EventWriter, alias_key
from hub.topics import Keys
from hub.topology import Node

ALIAS_MS_WITHOUT_AGE_BOUND = 7 * 24 * 3600 * 1000
"""How long a publisher's own ID stays usable as a cursor when history has no age bound."""


@dataclass
class Opening:
    """A Mercure stream registered and ready to start its response."""

    stream: MercureStream
    resume_from: Position | None
    """Where its replay starts (None: it went live at once)."""
    echoed: str | None
    """The `Last-Event-ID` response header: the update the stream starts after."""


class MercureGateway:
    def __init__(self, gateway: Gateway, writer: EventWriter) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.partitions = gateway.settings.mercure_partitions
        self.writer = writer
        self.keys = Keys(self.settings.key_prefix)
        self.dispatcher = Dispatcher(gateway.fanout.counters, gateway.metrics.observe_delay)
        self.sequencer = Sequencer(
            self.partitions,
            gateway.fanout,
            gateway.history,
            gateway.primaries,
            self.keys,
            self.dispatcher.release,
        )
        self.replayer = Replayer(gateway.history, self.partitions)
        self._alias_ms = self.settings.retention_seconds * 1000 or ALIAS_MS_WITHOUT_AGE_BOUND
        self._streams: dict[ClientConnection, MercureStream] = {}
        self._released_ticket: tuple[Position, int] = (BEFORE_ALL, 0)
        self.on_open: list[Callable[[MercureStream], None]] = []
        self.on_close: list[Callable[[MercureStream], None]] = []
        gateway.closing.append(self.sequencer.stop)

    # -- publishing -----------------------------------------------------------

    def prepare(self, update: Update) -> Call:
        partition = partition_of(update.topics[0], self.partitions)
        return self.writer.prepare_internal(
            partition_topic(partition), update.envelope(), update.id, self._alias_ms
        )

    async def publish(self, update: Update) -> str:
        """Write one update; its ID (the publisher's own, or one the hub makes)."""
        call = self.prepare(update)
        [outcome] = await self.writer.write([call])
        if isinstance(outcome, Exception):
            raise outcome.with_traceback(None)
        if update.id:
            return update.id
        partition = partition_of(update.topics[0], self.partitions)
        return hub_id(position(partition, parse_id(outcome)))

    # -- subscribing ----------------------------------------------------------

    async def locate(self, update_id: str) -> Position | Stored | None:
        """The update an ID names (a hub-made one, or its publisher's own), or the mark it
        names (a position between updates); None when the history no longer holds it."""
        found = parse_hub_id(update_id, self.partitions)
        if found is not None:
            return found if found[2] == self.partitions else await self._stored(found)
        keys = [
            alias_key(self.keys.stream(partition_topic(p)), update_id)
            for p in range(self.partitions)
        ]
        replies = await asyncio.gather(
            *(self.gateway.primaries.run(key, _get(key), idempotent=True) for key in keys)
        )
        for partition, [reply] in enumerate(replies):
            if reply is not None:
                return await self._stored(position(partition, parse_id(reply)))
        return None

    async def _stored(self, pos: Position) -> Stored | None:
        event = await self.gateway.history.entry(partition_topic(pos[2]), (pos[0], pos[1]))
        if event is None or event.malformed:
            return None
        try:
            return Stored.read(pos, event.data)
        except InvalidUpdate:
            return None

    async def open(
        self, selects: TopicFilter, grant: Grant | None, last_event_id: str | None
    ) -> Opening:
        """Register a stream; `Unavailable` when Redis does not answer."""
        readable = TopicFilter(grant.subscribe) if grant is not None and grant.subscribe else None
        client = self.gateway.connect(self._closed)
        stream = MercureStream(client, selects, readable, BEFORE_ALL, grant=grant)
        self._streams[client] = stream
        try:
            async with asyncio.timeout(self.settings.redis_timeout_seconds):
                await self.sequencer.started()
                if last_event_id is None:
                    stream.last = self.sequencer.released
                    self.dispatcher.go_live(stream)
                    return self._opened(stream, None, None)
                if last_event_id == EARLIEST:
                    self.dispatcher.join(stream)
                    return self._opened(stream, BEFORE_ALL, EARLIEST)
                self.dispatcher.join(stream)
                found = await self.locate(last_event_id)
        except (RedisError, TimeoutError) as exc:
            client.end(Ending.DISCONNECTED)
            raise Unavailable(str(exc) or "Redis did not answer in time") from exc
        except BaseException:
            client.end(Ending.DISCONNECTED)
            raise
        if found is None:
            gone = parse_hub_id(last_event_id, self.partitions)
            if gone is not None:
                # The hub named it, so its place is known though the update was trimmed:
                # replay what is left after it, and say that some may be missing.
                return self._opened(stream, gone, EARLIEST)
            # A publisher's ID the hub does not know (any more): go on from now, and say so.
            self.dispatcher.go_live(stream)
            stream.last = self.sequencer.released
            return self._opened(stream, None, EARLIEST)
        if isinstance(found, Stored):
            # The spec: the echoed ID never names an update the subscriber may not read.
            visible = not found.update.private or (
                readable is not None and readable.matches_any(found.update.topics)
            )
            return self._opened(stream, found.position, last_event_id if visible else EARLIEST)
        return self._opened(stream, found, last_event_id)

    def _opened(self, stream: MercureStream, start: Position | None, echoed: str | None) -> Opening:
        for listener in self.on_open:
            listener(stream)
        return Opening(stream, start, echoed)

    def serve(self, opening: Opening, send: Send, receive: Receive) -> Awaitable[None]:
        stream = opening.stream
        served = self.gateway.serve_connection(stream.client, send, receive)
        if opening.resume_from is None:
            return served
        return self._serve_replaying(stream, opening.resume_from, served)

    async def _serve_replaying(
        self, stream: MercureStream, start: Position, served: Awaitable[None]
    ) -> None:
        replay = asyncio.create_task(self._replay(stream, start))
        try:
            await served
        finally:
            replay.cancel()

    async def _replay(self, stream: MercureStream, start: Position) -> None:
        """Send what the stream missed, paced by its socket, then make it live."""
        client = stream.client
        stream.last = start
        try:
            while not client.ended:
                end = self.sequencer.released
                async for stored in self.replayer.between(stream.last, end, self._read_after(end)):
                    if client.ended:
                        return
                    if stream.wants(stored):
                        stream.last = stored.position
                        await client.push_paced(stored.frame)
                stream.last = max(stream.last, end)
                if not stream.overflowed:
                    break
                stream.overflowed = False  # too much came meanwhile: read it from Redis
                stream.pending = []
            pending = stream.pending or []
            for stored in pending:
                if stored.position > stream.last and stream.wants(stored):
                    stream.send(stored)
            self.dispatcher.go_live(stream)
        except (RedisError, OSError):
            client.end(Ending.SHUTDOWN)

    def _read_after(self, released: Position) -> int:
        """A history ticket taken once `released` was released: reads started after it hold
        every update up to it. One ticket per position, so the streams that resume together
        (a dead gateway's) still share their reads."""
        if self._released_ticket[0] != released:
            self._released_ticket = (released, self.gateway.history.ticket())
        return self._released_ticket[1]

    def _closed(self, client: ClientConnection, ending: Ending) -> None:
        stream = self._streams.pop(client, None)
        if stream is None:
            return
        self.dispatcher.leave(stream)
        for listener in self.on_close:
            listener(stream)


def _get(key: str) -> Callable[[Node], list[Command]]:
    return lambda node: [("GET", key)]
