"""Fan-out: every event a topic receives goes, once framed, to each of its clients.

Per topic the gateway keeps its `position`, the ID of the last event it
delivered. A live event whose `prev` is not that position means events went
missing (the subscription was down, Redis lost a message): live events are
parked and the topic catches up from its stream first. So every client of a
topic sees the topic's events in stream order, each once.

A client that resumes from a cursor joins a topic in two steps: it is
registered first (live events it would miss are kept for it), then it reads
the history after its cursor, and it goes live where the history and the
kept events meet. Subscribe first, then read: the other order loses events.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from hub import sse
from hub.client_connection import ClientConnection, Flusher
from hub.events import ORIGIN, Event, StreamId, format_id
from hub.history import History, Page
from hub.primaries import Primaries
from hub.sse import Framed
from hub.subscription import Subscription
from hub.topics import Keys

log = logging.getLogger("hub.fanout")

JOIN_PENDING_LIMIT = 10_000
"""Live events kept for a client still replaying; past that it re-reads them from the stream."""
BACKLOG_LIMIT = 10_000
"""Live events parked for a topic that is catching up; past that it reads them from the stream."""


class Unavailable(Exception):
    """Redis did not answer in time."""


@dataclass(eq=False)
class Joiner:
    """What a resuming client missed live while it read history."""

    newest: StreamId
    ticket: int
    pending: list[Framed] = field(default_factory=list)
    _target: StreamId = ORIGIN
    _reached: asyncio.Future[None] | None = None

    def add(self, framed: Framed) -> None:
        self.newest = framed.event.id
        if len(self.pending) < JOIN_PENDING_LIMIT:
            self.pending.append(framed)
        else:
            self.pending.clear()
        if self._reached is not None and self.newest >= self._target:
            self._reached.set_result(None)
            self._reached = None

    async def reach(self, target: StreamId) -> None:
        """Wait until the live fan-out has delivered `target`.

        A history read can get ahead of this gateway's live feed (the client
        saw newer events on another gateway, or Redis answered the read before
        the announcement arrived); going live before the feed gets there would
        deliver those events twice.
        """
        if self.newest < target:
            self._target = target
            self._reached = asyncio.get_running_loop().create_future()
            await self._reached


@dataclass(eq=False, slots=True)  # one per topic: ten thousand topics are common
class Topic:
    name: str
    position: StreamId | None = None
    backlog: list[Event] | None = field(default_factory=list)
    simple: set[ClientConnection] = field(default_factory=set)
    composite: dict[ClientConnection, int] = field(default_factory=dict)
    joining: dict[ClientConnection, Joiner] = field(default_factory=dict)
    taps: list[Callable[[Event, bool], None]] = field(default_factory=list)
    """Listeners that see every event of the topic, in order, malformed ones included
    (Mercure's sequencer, for its partitions), and whether it came live from pub/sub
    (rather than from the stream, catching up)."""
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    """Done once the topic's position is known; a future, not an `asyncio.Event`, which
    would cost each topic the best part of a kilobyte."""
    waiters: int = 0
    catching_up: asyncio.Task[None] | None = None
    reread: bool = False

    def idle(self) -> bool:
        return not (self.simple or self.composite or self.joining or self.waiters or self.taps)


@dataclass
class Resume:
    """A client's resumption of one topic, between registering and going live."""

    topic: Topic
    index: int
    after: StreamId
    first_page: Page
    truncated: bool


@dataclass
class Counters:
    events_received: int = 0
    deliveries: int = 0
    events_replayed: int = 0
    gaps_filled: int = 0
    malformed_skipped: int = 0


class Fanout:
    def __init__(
        self,
        primaries: Primaries,
        keys: Keys,
        history: History,
        timeout: float,
        on_delivery: Callable[[Event], None] = lambda event: None,
    ) -> None:
        self._topics: dict[str, Topic] = {}
        self._on_delivery = on_delivery
        self._history = history
        self._timeout = timeout
        self.subscription = Subscription(primaries, keys, self, timeout)
        self.flusher = Flusher()
        """Writes the clients' sockets: right after each read from Redis, and once per loop
        turn for what else queues frames (replays, heartbeats)."""
        self.counters = Counters()

    async def __aenter__(self) -> Fanout:
        await self.subscription.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for topic in self._topics.values():
            if topic.catching_up is not None:
                topic.catching_up.cancel()
        await self.subscription.__aexit__(*exc_info)

    def topic_names(self) -> list[str]:
        return list(self._topics)

    # -- clients ------------------------------------------------------------

    async def acquire(self, names: tuple[str, ...]) -> list[Topic]:
        """The topics, subscribed and with a known position; `Unavailable` if Redis is not."""
        topics = []
        for name in names:
            topic = self._topics.get(name)
            if topic is None:
                topic = self._topics[name] = Topic(name)
                self.subscription.subscribe(name)
            topic.waiters += 1
            topics.append(topic)
        try:
            async with asyncio.timeout(self._timeout):
                for topic in topics:
                    if not topic.ready.done():
                        await asyncio.shield(topic.ready)  # a waiter's timeout cancels none
        except BaseException as exc:
            for topic in topics:
                topic.waiters -= 1
                self._release_if_idle(topic)
            if isinstance(exc, TimeoutError):
                raise Unavailable("Redis did not answer in time") from None
            raise
        for topic in topics:  # the caller makes the client a member before it next awaits
            topic.waiters -= 1
        return topics

    def tap(self, topic: Topic, listener: Callable[[Event, bool], None]) -> StreamId:
        """Give `listener` every event of `topic` after its position, which is returned.

        The topic is kept subscribed while it has a listener.
        """
        assert topic.position is not None
        topic.taps.append(listener)
        return topic.position

    def attach(self, client: ClientConnection, topics: list[Topic]) -> None:
        """Make `client` a live member of every topic, starting from now."""
        for index, topic in enumerate(topics):
            assert topic.position is not None
            client.positions[index] = topic.position
            self._enlist(client, topic, index)

    async def begin_resume(
        self, client: ClientConnection, topics: list[Topic], after: list[StreamId]
    ) -> list[Resume]:
        """Register `client` with each topic, then read the first page of what it missed."""
        for topic in topics:
            assert topic.position is not None
            topic.joining[client] = Joiner(topic.position, self._history.ticket())
        resumes = []
        for index, (topic, cursor) in enumerate(zip(topics, after, strict=True)):
            page = await self._history.page_after(topic.name, cursor)
            if page.events:
                truncated = page.events[0].event.prev != cursor
            else:
                truncated = cursor != ORIGIN and not await self._history.contains(
                    topic.name, cursor
                )
                if truncated:  # a cursor from a history that is gone: start from now
                    cursor = await self._history.tail(topic.name)
            client.positions[index] = cursor
            resumes.append(Resume(topic, index, cursor, page, truncated))
        return resumes

    async def finish_resume(self, client: ClientConnection, resume: Resume) -> None:
        """Send what `client` missed of one topic, paced by its socket, then go live."""
        topic, after, page = resume.topic, resume.after, resume.first_page
        composite = len(client.topics) > 1
        if resume.truncated:
            first = page.events[0].event.id if page.events else None
            await client.push_paced(sse.reset_notice(topic.name, first))
        fresh = False  # whether `page` comes from a read started after this client registered
        while not client.ended:
            if composite:
                after = await self._replay_composite(client, resume.index, page, after)
            else:
                after = await self._replay_page(client, page, after)
            if client.ended:
                return
            joiner = topic.joining[client]
            if page.complete:
                await joiner.reach(after)
                rest = [framed for framed in joiner.pending if framed.event.id > after]
                meets = rest[0].event.prev == after if rest else after >= joiner.newest
                if meets or (fresh and not page.events):
                    if not meets:  # trimmed while this client read: say so, then go on
                        kept = rest[0].event.id if rest else None
                        client.push(sse.reset_notice(topic.name, kept))
                    del topic.joining[client]
                    client.positions[resume.index] = after
                    for framed in rest:
                        self._send(client, resume.index, framed)
                    self._enlist(client, topic, resume.index)
                    return
                # Share reads with other clients resuming from the same place; insist on
                # a read of one's own only when a shared one brought nothing new.
                fresh = not page.events
            else:
                fresh = False
            await client.drained()
            page = await self._history.page_after(
                topic.name, after, not_before=joiner.ticket if fresh else 0
            )
            if page.events and page.events[0].event.prev != after:  # trimmed between pages
                await client.push_paced(sse.reset_notice(topic.name, page.events[0].event.id))

    async def _replay_page(self, client: ClientConnection, page: Page, after: StreamId) -> StreamId:
        """The page's frames after `after`, handed over a window at a time; the new `after`.

        The page's frames are joined once for every client that replays it (after a
        gateway dies, a thousand resume from the same place): a client takes slices
        of them, with no work per event.
        """
        start = bisect.bisect_right(page.ids, after)
        if start == len(page.ids):
            return after
        ends, window = page.frame_ends, client.replay_window
        begin = ends[start - 1] if start else 0
        while start < len(ends) and not client.ended:
            stop = max(start + 1, bisect.bisect_right(ends, begin + window, lo=start))
            await client.push_paced(page.frames[begin : ends[stop - 1]])
            self.counters.events_replayed += stop - start
            start, begin = stop, ends[stop - 1]
        return page.ids[start - 1]

    async def _replay_composite(
        self, client: ClientConnection, index: int, page: Page, after: StreamId
    ) -> StreamId:
        """`_replay_page` for a connection with a composite cursor: an `id` per frame."""
        for framed in page.events:
            if framed.event.id <= after:
                continue
            after = framed.event.id
            if framed.frame:
                await client.push_at_paced(index, after, framed.body)
            else:  # malformed: it keeps its place, nothing is sent
                client.positions[index] = after
            self.counters.events_replayed += 1
        return after

    def detach(self, client: ClientConnection) -> None:
        """Forget `client` everywhere; a topic left with no client is unsubscribed."""
        for name in client.topics:
            topic = self._topics.get(name)
            if topic is None:
                continue
            topic.simple.discard(client)
            topic.composite.pop(client, None)
            topic.joining.pop(client, None)
            self._release_if_idle(topic)

    def _enlist(self, client: ClientConnection, topic: Topic, index: int) -> None:
        if len(client.topics) == 1:
            topic.simple.add(client)
        else:
            topic.composite[client] = index

    def _send(self, client: ClientConnection, index: int, framed: Framed) -> None:
        if not framed.frame:
            client.positions[index] = framed.event.id
        elif len(client.topics) == 1:
            client.push(framed.frame)
        else:
            client.push_at(index, framed.event.id, framed.body)

    def _release_if_idle(self, topic: Topic) -> None:
        if topic.idle() and self._topics.get(topic.name) is topic:
            del self._topics[topic.name]
            if topic.catching_up is not None:
                topic.catching_up.cancel()
            asyncio.get_running_loop().call_soon(self._unsubscribe_unless_wanted, topic.name)

    def _unsubscribe_unless_wanted(self, name: str) -> None:
        if name not in self._topics:  # a client may have come back for it meanwhile
            self.subscription.unsubscribe(name)

    # -- events from Redis ---------------------------------------------------

    def on_subscribed(self, name: str) -> None:
        topic = self._topics.get(name)
        if topic is not None:
            self._catch_up(topic)

    def on_replies_done(self) -> None:
        self.flusher.flush()

    def on_message(self, name: str, message: bytes) -> None:
        topic = self._topics.get(name)
        if topic is None:
            return
        try:
            event = Event.from_message(name, message)
        except (ValueError, UnicodeDecodeError):
            # Not the publish script's: its stream entry, if any, is read on the gap it leaves.
            log.warning("ignored a malformed message on topic %s", name)
            return
        self.counters.events_received += 1
        if topic.backlog is not None:
            if len(topic.backlog) < BACKLOG_LIMIT:
                topic.backlog.append(event)
            else:  # the stream holds them: catch up again rather than hold them here
                topic.reread = True
        elif topic.position is None or event.id <= topic.position:
            return  # already delivered
        elif event.prev != topic.position:
            self.counters.gaps_filled += 1
            topic.backlog = [event]
            self._catch_up(topic)
        elif topic.taps and not (topic.simple or topic.composite or topic.joining):
            # Only tapped (one of Mercure's partitions): its listeners frame what they send.
            topic.position = event.id
            for listener in topic.taps:
                listener(event, True)
        else:
            self._deliver(topic, Framed.of(event), live=True)

    def _deliver(self, topic: Topic, framed: Framed, live: bool = False) -> None:
        topic.position = framed.event.id
        frame = framed.frame
        for joiner in topic.joining.values():
            joiner.add(framed)
        for listener in topic.taps:
            listener(framed.event, live)
        if not frame:
            self._skip(topic, framed)
            return
        for client in topic.simple:
            client.push(frame)
        if topic.composite:
            sid, body = framed.event.id, framed.body
            for client, index in topic.composite.items():
                client.push_at(index, sid, body)
        self.counters.deliveries += len(topic.simple) + len(topic.composite)
        self._on_delivery(framed.event)

    def _skip(self, topic: Topic, framed: Framed) -> None:
        """A malformed event keeps its place in the topic's order; nothing is sent."""
        self.counters.malformed_skipped += 1
        log.error(
            "skipped event %s of topic %s: %s",
            format_id(framed.event.id),
            topic.name,
            framed.event.malformed,
            extra={"event": "malformed_entry"},
        )
        for client, index in topic.composite.items():  # their cursors still move past it
            client.positions[index] = framed.event.id

    def _catch_up(self, topic: Topic) -> None:
        if topic.backlog is None:
            topic.backlog = []
        if topic.catching_up is None or topic.catching_up.done():
            topic.catching_up = asyncio.create_task(self._run_catch_up(topic))
            topic.catching_up.add_done_callback(lambda task: _forget_task(topic, task))

    async def _run_catch_up(self, topic: Topic) -> None:
        """Deliver what the stream holds after the topic's position, then the parked events."""
        delay = 0.05
        while self._topics.get(topic.name) is topic:
            try:
                ticket = self._history.ticket()
                topic.reread = False
                if topic.position is None:
                    topic.position = await self._history.tail(topic.name)
                    topic.ready.set_result(None)
                else:
                    await self._deliver_history(topic, ticket)
            except Exception as exc:
                log.log(
                    logging.WARNING if isinstance(exc, RedisError) else logging.ERROR,
                    "catching up topic %s failed: %s",
                    topic.name,
                    exc,
                    exc_info=not isinstance(exc, RedisError),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            assert topic.backlog is not None and topic.position is not None
            backlog, topic.backlog = topic.backlog, []
            for index, event in enumerate(backlog):
                if event.id <= topic.position:
                    continue
                if event.prev != topic.position:
                    topic.backlog = backlog[index:]
                    break
                self._deliver(topic, Framed.of(event))
            else:
                if not topic.reread:
                    topic.backlog = None
                    return

    async def _deliver_history(self, topic: Topic, ticket: int) -> None:
        while True:
            assert topic.position is not None
            page = await self._history.page_after(topic.name, topic.position, not_before=ticket)
            # Each page starts where the last ended, unless the stream was trimmed between.
            if page.events and page.events[0].event.prev != topic.position:
                notice = sse.reset_notice(topic.name, page.events[0].event.id)
                for client in (*topic.simple, *topic.composite):
                    client.push(notice)
            for framed in page.events:
                self._deliver(topic, framed)
            if page.complete:
                return


def _forget_task(topic: Topic, task: asyncio.Task[None]) -> None:
    """A topic keeps no finished catch-up task: each idle topic would hold one."""
    if topic.catching_up is task:
        topic.catching_up = None
