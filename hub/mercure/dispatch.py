"""Which Mercure streams get an update: their matchers, and their token for private ones.

Streams whose matchers are all exact topics are indexed by topic, so an update
costs a lookup per topic and a write per recipient, however many streams are
open; streams with URL patterns, templates or `*` are asked one by one, each
answer remembered per topic. Every update's frame is built once.

A stream that resumes joins in two steps, as native ones do: it is registered
first (updates released meanwhile are kept for it), then it reads what it
missed from the partitions, in position order, up to the last position the
sequencer had released, and it goes live where the two meet.
"""

from __future__ import annotations

import heapq
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from hub.auth import Grant
from hub.client_connection import ClientConnection
from hub.events import ORIGIN, StreamId
from hub.fanout import Counters
from hub.history import History, Page
from hub.mercure.matchers import TopicFilter
from hub.mercure.record import (
    InvalidUpdate,
    Position,
    Stored,
    after_in_partition,
    partition_topic,
    position,
)
from hub.sse import Framed

JOIN_PENDING_LIMIT = 10_000
"""Updates kept for a stream still replaying; past that it reads them from the partitions."""


@dataclass(eq=False, slots=True)
class MercureStream:
    """One subscriber's connection: what it selects, what it may read, where it is."""

    client: ClientConnection
    selects: TopicFilter
    readable: TopicFilter | None
    """The topics the token lets it read privately (None: public updates only)."""
    last: Position
    pending: list[Stored] | None = None
    overflowed: bool = False
    grant: Grant | None = field(default=None, repr=False)

    def wants(self, stored: Stored) -> bool:
        topics = stored.update.topics
        if not self.selects.matches_any(topics):
            return False
        return not stored.update.private or (
            self.readable is not None and self.readable.matches_any(topics)
        )

    def send(self, stored: Stored) -> bool:
        """Send an update, unless the stream is already past it: a stream that resumed
        here from a cursor another gateway reached first sees this gateway release the
        updates up to its cursor after it went live."""
        if stored.position <= self.last:
            return False
        self.last = stored.position
        self.client.push(stored.frame)
        return True


class Dispatcher:
    """Sends each released update to the live streams that want it; counts in the
    gateway's figures (`counters`, and the publish-to-send delay, `observe_delay`)."""

    def __init__(self, counters: Counters, observe_delay: Callable[[int], None]) -> None:
        self._exact: dict[str, set[MercureStream]] = {}
        self._broad: set[MercureStream] = set()
        self._joining: set[MercureStream] = set()
        self._counters = counters
        self._observe_delay = observe_delay

    def join(self, stream: MercureStream) -> None:
        """Keep what is released for `stream` until it goes live."""
        stream.pending = []
        self._joining.add(stream)

    def go_live(self, stream: MercureStream) -> None:
        self._joining.discard(stream)
        stream.pending = None
        if stream.selects.wildcard or len(stream.selects.exact) < len(stream.selects.matchers):
            self._broad.add(stream)
            return
        for topic in stream.selects.exact:
            self._exact.setdefault(topic, set()).add(stream)

    def leave(self, stream: MercureStream) -> None:
        self._joining.discard(stream)
        self._broad.discard(stream)
        for topic in stream.selects.exact:
            members = self._exact.get(topic)
            if members is not None:
                members.discard(stream)
                if not members:
                    del self._exact[topic]

    def release(self, stored: Stored) -> None:
        """Send a released update to every live stream that wants it."""
        topics = stored.update.topics
        sent = 0
        if len(topics) == 1:
            members = self._exact.get(topics[0])
            if members:
                if not stored.update.private:
                    pos, frame = stored.position, stored.frame
                    for stream in members:
                        if stream.last < pos:  # see `MercureStream.send`
                            stream.last = pos
                            stream.client.push(frame)
                            sent += 1
                else:
                    for stream in members:
                        if stream.wants(stored):
                            sent += stream.send(stored)
        else:
            chosen: set[MercureStream] = set()
            for topic in topics:
                chosen.update(self._exact.get(topic, ()))
            for stream in chosen:
                if stream.wants(stored):
                    sent += stream.send(stored)
        for stream in self._broad:
            if stream.wants(stored):
                sent += stream.send(stored)
        for stream in self._joining:
            pending = stream.pending
            if pending is None:
                continue
            if len(pending) < JOIN_PENDING_LIMIT:
                pending.append(stored)
            else:
                pending.clear()
                stream.overflowed = True
        if sent:
            self._counters.deliveries += sent
            self._observe_delay(stored.position[0])


@dataclass
class Replayer:
    """Reads what a stream missed, across the partitions, in position order."""

    history: History
    partitions: int
    _read: weakref.WeakKeyDictionary[Page, list[Stored | None]] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False
    )
    """The updates of each history page, read once: after a gateway dies, a thousand
    streams resume from the same pages."""

    async def between(
        self, start: Position, end: Position, not_before: int
    ) -> AsyncIterator[Stored]:
        """The updates after `start` up to `end`, in order (pages read as they are needed),
        from reads started after history ticket `not_before`: a page another stream read
        before `end` was released may end before updates up to it, and still say complete."""
        cursors = [self._iterate(p, after_in_partition(start, p) or ORIGIN, end, not_before)
                   for p in range(self.partitions)]  # fmt: skip
        heads: list[tuple[Position, int, Stored]] = []
        for partition, cursor in enumerate(cursors):
            first = await anext(cursor, None)
            if first is not None:
                heads.append((first.position, partition, first))
        heapq.heapify(heads)
        while heads:
            _, partition, stored = heads[0]
            yield stored
            following = await anext(cursors[partition], None)
            if following is None:
                heapq.heappop(heads)
            else:
                heapq.heapreplace(heads, (following.position, partition, following))

    async def _iterate(
        self, partition: int, after: StreamId, end: Position, not_before: int
    ) -> AsyncIterator[Stored]:
        name = partition_topic(partition)
        while True:
            page = await self.history.page_after(name, after, not_before=not_before)
            for framed, stored in zip(page.events, self._updates(partition, page), strict=True):
                if position(partition, framed.event.id) > end:
                    return
                after = framed.event.id
                if stored is not None:
                    yield stored
            if page.complete or not page.events:
                return

    def _updates(self, partition: int, page: Page) -> list[Stored | None]:
        """Each entry of a page as an update (None for one no publish wrote)."""
        updates = self._read.get(page)
        if updates is None:
            updates = self._read[page] = [_update(partition, framed) for framed in page.events]
        return updates


def _update(partition: int, framed: Framed) -> Stored | None:
    if framed.event.malformed:
        return None
    try:
        return Stored.read(position(partition, framed.event.id), framed.event.data)
    except InvalidUpdate:
        return None
