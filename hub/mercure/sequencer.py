"""One hub-wide order over Mercure's partitions, the same on every gateway.

Each partition reaches the gateway in its own stream order (the native fan-out
sees to that: gaps are filled from the stream), but the partitions interleave
as the network pleases. The sequencer holds updates back and releases them in
position order, `(ms, partition, seq)` (see `hub/mercure/record.py`), so that
every gateway hands every subscriber the same sequence, and an update's ID
says exactly which updates came before it.

An update may go once no partition can still bring one that sorts before it:
each other partition has delivered past its ID, or has every update of its
millisecond. For each partition the sequencer keeps that watermark, the last
millisecond of which it has every update. It rises with the partition's own
updates (IDs increase: an update at T means all before T are in), and with a
barrier: `TIME` then the partition's tail, in one round trip to the Redis that
holds it. An update the server writes after that `TIME` gets a larger
millisecond, so once the partition has delivered up to that tail, every update
of it before that millisecond is here. Each server's clock counts only for its
own partitions: clocks that disagree delay updates, they never reorder them.

On one server (not a Cluster) there is a shortcut: pub/sub hands the gateway
the updates of every partition on one connection, in the order the server wrote
them, and a later update gets a later ID. So an update that arrives live says
that every partition that is not catching up has delivered all that sorts
before it: on one server, updates go as soon as they arrive, and barriers are
only needed while a partition catches up from its stream.
A barrier is sent while updates wait, one at a time, two milliseconds apart, to
the partitions that hold back the first update waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from hub.events import ORIGIN, Event, StreamId, parse_id
from hub.fanout import Fanout, Topic
from hub.history import History
from hub.mercure.record import (
    BEFORE_ALL,
    InvalidUpdate,
    Position,
    Stored,
    after_in_partition,
    mark,
    partition_topic,
    position,
)
from hub.primaries import Command, Primaries
from hub.topics import Keys

log = logging.getLogger("hub.mercure.sequencer")

BARRIER_SPACING = 0.002
"""Seconds between barriers while updates wait: a server's clock must tick past them, and
under a steady load the partitions' own updates release most of them in that time."""


class Sequencer:
    """Releases the updates of every partition, in position order, to `on_release`."""

    def __init__(
        self,
        partitions: int,
        fanout: Fanout,
        history: History,
        primaries: Primaries,
        keys: Keys,
        on_release: Callable[[Stored], None],
    ) -> None:
        self.partitions = partitions
        self._fanout = fanout
        self._history = history
        self._primaries = primaries
        self._keys = keys
        self._on_release = on_release
        self.released: Position = BEFORE_ALL
        """The last position released: every update up to it is in the streams."""
        self._held: list[tuple[Position, Stored]] = []
        self._delivered: list[StreamId] = [ORIGIN] * partitions
        self._watermarks: list[int] = [-1] * partitions
        # A barrier's watermark for a partition that has not yet delivered the tail it saw.
        self._awaited: list[tuple[StreamId, int] | None] = [None] * partitions
        # The newest ID that arrived live, when every partition comes on one connection.
        self._one_server = not primaries.topology.sharded
        self._arrived: StreamId = ORIGIN
        self._topics: list[Topic] = []
        self._barrier: asyncio.Task[None] | None = None
        self._barrier_due: asyncio.TimerHandle | None = None
        self._started: asyncio.Future[None] | None = None
        self._feeding = True
        self.malformed_skipped = 0

    async def started(self) -> None:
        """Start on first use (a gateway nobody asks for Mercure takes none of its traffic)."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._start())
            task.add_done_callback(self._start_done)
        await asyncio.shield(self._started)

    def _start_done(self, task: asyncio.Task[None]) -> None:
        assert self._started is not None
        error = RedisError("cancelled") if task.cancelled() else task.exception()
        if error is not None:
            self._started.set_exception(error)
            self._started.exception()  # seen: the next subscriber tries again
            self._started = None
            self.stop()
        else:
            self._started.set_result(None)

    def stop(self) -> None:
        for handle in (self._barrier, self._barrier_due):
            if handle is not None:
                handle.cancel()

    async def _start(self) -> None:
        """Tap every partition, find where the order starts, and feed what came between."""
        names = tuple(partition_topic(n) for n in range(self.partitions))
        topics = self._topics = await self._fanout.acquire(names)
        attached = []
        for partition, topic in enumerate(topics):
            if not topic.taps:
                at = self._fanout.tap(topic, self._listener(partition))
                self._delivered[partition] = at
                self._watermarks[partition] = at[0] - 1
            attached.append(self._delivered[partition])
        # Reads from now on hold every update up to what the taps had delivered.
        fresh = self._history.ticket()
        # Every update at or before the barriers' first millisecond is in the streams.
        clocks = await self._run_barrier()
        self.released = mark(min(clocks) - 1, self.partitions)
        # Updates after the start that reached a stream before its tap: read them.
        for partition in range(self.partitions):
            after = after_in_partition(self.released, partition) or ORIGIN
            await self._feed(partition, after, attached[partition], fresh)
        self._feeding = False
        self._release()

    async def _feed(self, partition: int, after: StreamId, until: StreamId, fresh: int) -> None:
        name = partition_topic(partition)
        while after < until:
            page = await self._history.page_after(name, after, not_before=fresh)
            for framed in page.events:
                if framed.event.id > until:
                    return
                self._hold(partition, framed.event)
                after = framed.event.id
            if page.complete or not page.events:
                return

    def _listener(self, partition: int) -> Callable[[Event, bool], None]:
        def listen(event: Event, live: bool) -> None:
            self._delivered[partition] = event.id
            if live and event.id > self._arrived:
                self._arrived = event.id
            mark = event.id[0] - 1
            awaited = self._awaited[partition]
            if awaited is not None and event.id >= awaited[0]:
                mark = max(mark, awaited[1])
                self._awaited[partition] = None
            if mark > self._watermarks[partition]:
                self._watermarks[partition] = mark
            self._hold(partition, event)
            self._release()

        return listen

    def _hold(self, partition: int, event: Event) -> None:
        pos = position(partition, event.id)
        if pos <= self.released or event.malformed:
            return
        try:
            stored = Stored.read(pos, event.data)
        except InvalidUpdate as exc:
            self.malformed_skipped += 1
            log.error("skipped Mercure entry %s: %s", pos, exc, extra={"event": "malformed_entry"})
            return
        heapq.heappush(self._held, (pos, stored))

    def _releasable(self, pos: Position) -> bool:
        if min(self._watermarks) >= pos[0]:
            return True
        if (
            self._one_server
            and self._arrived >= (pos[0], pos[1])
            and all(topic.backlog is None for topic in self._topics)
        ):
            return True  # the usual case on one server: no partition is catching up
        return not any(self._holds_back(other, pos) for other in range(self.partitions))

    def _holds_back(self, other: int, pos: Position) -> bool:
        """Whether partition `other` may still bring an update that sorts before `pos`."""
        ms, seq, partition = pos
        return (
            other != partition
            and self._watermarks[other] < ms
            and self._delivered[other] < (ms, seq)
            and not (
                self._one_server
                and self._arrived >= (ms, seq)
                and self._topics[other].backlog is None
            )
        )

    def _release(self) -> None:
        if self._feeding:
            return
        held = self._held
        while held and self._releasable(held[0][0]):
            pos, stored = heapq.heappop(held)
            if pos <= self.released:
                continue  # fed and tapped both
            self.released = pos
            self._on_release(stored)
        if held and self._barrier is None and self._barrier_due is None:
            self._barrier_due = asyncio.get_running_loop().call_later(
                BARRIER_SPACING, self._send_barrier
            )

    def _lagging(self) -> list[int]:
        """The partitions that hold back the first update waiting: the barrier asks those."""
        if not self._held:
            return []
        first = self._held[0][0]
        return [other for other in range(self.partitions) if self._holds_back(other, first)]

    def _send_barrier(self) -> None:
        self._barrier_due = None
        self._barrier = asyncio.create_task(self._barrier_round())

    async def _barrier_round(self) -> None:
        delay = BARRIER_SPACING
        try:
            while True:
                try:
                    lagging = self._lagging()
                    if lagging:
                        await self._run_barrier(lagging)
                    return
                except (RedisError, OSError) as exc:
                    log.warning("Mercure barrier failed, updates wait: %s", exc)
                    delay = min(max(delay * 2, 0.05), 1.0)
                    await asyncio.sleep(delay)
        finally:
            self._barrier = None
            self._release()

    async def _run_barrier(self, partitions: list[int] | None = None) -> list[int]:
        """`TIME` and the tails of the partitions (all of them by default), per server; each
        server's millisecond."""
        groups: dict[str, list[int]] = {}
        for partition in range(self.partitions) if partitions is None else partitions:
            key = self._keys.stream(partition_topic(partition))
            try:
                owner = self._primaries.topology.owner(key).name
            except RedisError:
                owner = ""
            groups.setdefault(owner, []).append(partition)
        clocks = await asyncio.gather(*(self._barrier_on(group) for group in groups.values()))
        return list(clocks)

    async def _barrier_on(self, partitions: list[int]) -> int:
        keys = [self._keys.stream(partition_topic(partition)) for partition in partitions]
        commands: list[Command] = [("TIME",)]
        commands += [("XREVRANGE", key, "+", "-", "COUNT", 1) for key in keys]
        try:
            replies = await self._primaries.run(keys[0], lambda node: commands, idempotent=True)
        except RedisError:
            if len(partitions) == 1:
                raise
            # The partitions no longer share a server (a Cluster resharded): one by one.
            clocks = await asyncio.gather(*(self._barrier_on([p]) for p in partitions))
            return min(clocks)
        clock = _milliseconds(replies[0])
        for partition, tail in zip(partitions, replies[1:], strict=True):
            mark = clock - 1
            newest = parse_id(tail[0][0]) if tail else ORIGIN
            if self._delivered[partition] >= newest:
                self._watermarks[partition] = max(self._watermarks[partition], mark)
            else:
                self._awaited[partition] = (newest, mark)
        return clock


def _milliseconds(time_reply: Any) -> int:
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000
