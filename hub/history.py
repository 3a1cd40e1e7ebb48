"""Reads of a topic's stream: its tail, and pages of history after a cursor.

Pages are framed once and shared: when a gateway that died leaves a thousand
clients to reconnect here with the same cursor, one `XRANGE` serves them all.
A read is shared with whoever asks for the same (topic, cursor) while it runs
and for `SHARE_SECONDS` after; a caller that needs what was written after
some moment asks for a read that started after it (`not_before`).

A page holds at most `page_size` events and about `page_bytes` of them: Redis
cannot bound an `XRANGE` by size, so a page is read in steps, each sized by the
largest entry seen so far, and a topic of 1 MB events never loads a thousand
of them at once for one resuming client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

from redis.exceptions import RedisError

from hub.events import ORIGIN, Event, StreamId, format_id, parse_id
from hub.primaries import Command, Primaries
from hub.sse import Framed
from hub.topics import Keys

SHARE_SECONDS = 1.0
READS_PER_ROUND_TRIP = 1000
FIRST_STEP = 16
"""Entries asked for by a page's first read; most resumes miss fewer."""
Entries = list[list[Any]]
"""Stream entries as Redis sends them: `[id, [field, value, field, value...]]` each."""
log = logging.getLogger("hub.history")


@dataclass(frozen=True, eq=False)  # one page is shared by every reader: its identity counts
class Page:
    """Events after a cursor, oldest first; `complete` when they reach the stream's end."""

    events: list[Framed]
    complete: bool

    @cached_property
    def ids(self) -> list[StreamId]:
        return [framed.event.id for framed in self.events]

    @cached_property
    def frames(self) -> bytes:
        """Every frame of the page, one after the other (a malformed event adds none)."""
        return b"".join(framed.frame for framed in self.events)

    @cached_property
    def frame_ends(self) -> list[int]:
        """Where each event's frame ends in `frames`."""
        return list(itertools.accumulate(len(framed.frame) for framed in self.events))


@dataclass(frozen=True)
class _Queued:
    """A read command waiting for the next round trip to its primary."""

    key: str
    words: Command
    wanted: asyncio.Future[Any]


@dataclass
class _Read:
    ticket: int
    result: asyncio.Future[Page] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class History:
    def __init__(self, primaries: Primaries, keys: Keys, page_size: int, page_bytes: int) -> None:
        self._primaries = primaries
        self._keys = keys
        self.page_size = page_size
        self.page_bytes = page_bytes
        self._tickets = itertools.count(1)
        self._reads: dict[tuple[str, StreamId], _Read] = {}
        self._queued: list[_Queued] = []
        self._running: set[asyncio.Task[None]] = set()
        self.reads_done = 0
        self.malformed_skipped = 0

    def ticket(self) -> int:
        """A mark in time: reads started after it have a larger ticket."""
        return next(self._tickets)

    async def tail(self, topic: str) -> StreamId:
        """The ID of the topic's newest event, or `ORIGIN` when it has none."""
        newest = cast(Entries, await self._read(topic, "XREVRANGE", "+", "-", "COUNT", 1))
        return parse_id(newest[0][0]) if newest else ORIGIN

    def _spawn(self, read: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(read)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def contains(self, topic: str, sid: StreamId) -> bool:
        return await self.entry(topic, sid) is not None

    async def entry(self, topic: str, sid: StreamId) -> Event | None:
        """The event `sid` of the topic, if its stream still holds it."""
        text = format_id(sid)
        found = cast(Entries, await self._read(topic, "XRANGE", text, text, "COUNT", 1))
        if not found:
            return None
        [[raw_id, flat]] = found
        return Event.from_entry(topic, raw_id, _fields(flat))

    async def page_after(self, topic: str, after: StreamId, not_before: int = 0) -> Page:
        """Up to `page_size` events (and about `page_bytes`) after `after`."""
        key = (topic, after)
        read = self._reads.get(key)
        if (
            read is None
            or read.ticket <= not_before
            or (read.result.done() and read.result.exception() is not None)
        ):
            read = _Read(self.ticket())
            self._reads[key] = read
            self._spawn(self._run(key, read))
        return await asyncio.shield(read.result)

    async def _run(self, key: tuple[str, StreamId], read: _Read) -> None:
        try:
            read.result.set_result(await self._read_page(*key))
            self.reads_done += 1
        except Exception as exc:  # the waiting clients get the error; nothing is cached
            read.result.set_exception(exc)
            read.result.exception()  # retrieved: a read nobody awaits any more is no warning
        finally:
            asyncio.get_running_loop().call_later(SHARE_SECONDS, self._forget, key, read)

    async def _read_page(self, topic: str, after: StreamId) -> Page:
        events: list[Framed] = []
        size, largest, step = 0, 1, min(FIRST_STEP, self.page_size)
        while True:
            start = f"({format_id(after)}"
            entries = cast(
                Entries,
                await self._read(topic, "XRANGE", start, "+", "COUNT", step),
            )
            for sid, flat in entries:
                fields = _fields(flat)
                event = Event.from_entry(topic, sid, fields)
                if event.malformed:
                    self.malformed_skipped += 1
                    log.error(
                        "skipped stream entry %s of topic %s: %s",
                        sid.decode("ascii", "replace"),
                        topic,
                        event.malformed,
                        extra={"event": "malformed_entry"},
                    )
                events.append(Framed.of(event))
                entry_bytes = sum(len(value) for value in fields.values())
                size += entry_bytes
                largest = max(largest, entry_bytes)
            if len(entries) < step:
                return Page(events, complete=True)
            after = events[-1].event.id
            room = min(self.page_size - len(events), (self.page_bytes - size) // largest)
            if room <= 0:
                return Page(events, complete=False)
            step = min(room, step * 4)

    async def _read(self, topic: str, command: str, *arguments: str | int) -> Any:
        """One read command of the topic's stream, on the primary that holds it.

        The reads asked for in one turn of the event loop are sent together, in
        one round trip per primary: when thousands of clients join or resume at
        once, each on a topic of its own, their reads do not queue one behind the
        other for the connection pool.
        """
        key = self._keys.stream(topic)
        wanted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._send_queued)
        self._queued.append(_Queued(key, (command, key, *arguments), wanted))
        return await wanted

    def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        by_primary: dict[str, list[_Queued]] = {}
        for read in queued:
            try:
                primary = self._primaries.topology.owner(read.key).name
            except RedisError:
                primary = ""  # none known now: the read learns the topology again
            by_primary.setdefault(primary, []).append(read)
        for reads in by_primary.values():
            for start in range(0, len(reads), READS_PER_ROUND_TRIP):
                self._spawn(self._send_together(reads[start : start + READS_PER_ROUND_TRIP]))

    async def _send_together(self, reads: list[_Queued]) -> None:
        words = [read.words for read in reads]
        try:
            results = await self._primaries.run(reads[0].key, lambda node: words, idempotent=True)
        except Exception as exc:
            if len(reads) > 1:  # one read's error, or keys no longer on one primary
                for read in reads:
                    self._spawn(self._send_together([read]))
                return
            results = [exc]
        for read, result in zip(reads, results, strict=True):
            if read.wanted.done():
                continue  # its caller is gone
            if isinstance(result, Exception):
                read.wanted.set_exception(result)
            else:
                read.wanted.set_result(result)

    def _forget(self, key: tuple[str, StreamId], read: _Read) -> None:
        if self._reads.get(key) is read:
            del self._reads[key]


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    """An entry's fields, from the flat list Redis sends: field, value, field, value..."""
    return dict(zip(flat[0::2], flat[1::2], strict=True))
