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
from typing import Any, cast

from redis.exceptions import RedisError

from hub.events import ORIGIN, Event, StreamId, format_id, parse_id
from hub.primaries import Command, Primaries
from hub.sse import Framed
from hub.topics import Keys

SHARE_SECONDS = 1.0
TAILS_PER_READ = 1000
"""Most tails read in one round trip."""
FIRST_STEP = 16
"""Entries asked for by a page's first read; most resumes miss fewer."""
Entries = list[tuple[bytes, dict[bytes, bytes]]]
log = logging.getLogger("hub.history")


@dataclass(frozen=True)
class Page:
    """Events after a cursor, oldest first; `complete` when they reach the stream's end."""

    events: list[Framed]
    complete: bool


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
        self._tails: dict[str, asyncio.Future[StreamId]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self.reads_done = 0
        self.malformed_skipped = 0

    def ticket(self) -> int:
        """A mark in time: reads started after it have a larger ticket."""
        return next(self._tickets)

    async def tail(self, topic: str) -> StreamId:
        """The ID of the topic's newest event, or `ORIGIN` when it has none.

        The tails asked for in one turn of the event loop are read together, in one
        round trip per primary: when thousands of clients join at once, each on a
        topic of its own, their reads do not queue one behind the other.
        """
        wanted = self._tails.get(topic)
        if wanted is None:
            if not self._tails:
                asyncio.get_running_loop().call_soon(self._read_tails)
            wanted = self._tails[topic] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(wanted)

    def _read_tails(self) -> None:
        tails, self._tails = self._tails, {}
        groups: dict[str, list[str]] = {}
        for topic in tails:
            try:
                owner = self._primaries.topology.owner(self._keys.stream(topic)).name
            except RedisError:
                owner = ""  # unknown for now: the read learns the topology again
            groups.setdefault(owner, []).append(topic)
        for group in groups.values():
            for start in range(0, len(group), TAILS_PER_READ):
                chunk = {topic: tails[topic] for topic in group[start : start + TAILS_PER_READ]}
                self._spawn(self._read_tail_group(chunk))

    async def _read_tail_group(self, tails: dict[str, asyncio.Future[StreamId]]) -> None:
        keys = [self._keys.stream(topic) for topic in tails]
        words: list[Command] = [("XREVRANGE", key, "+", "-", "COUNT", 1) for key in keys]
        try:
            results = await self._primaries.run(keys[0], lambda node: words, idempotent=True)
        except Exception as exc:
            if len(tails) > 1:  # perhaps not all on one primary any more: each on its own
                for topic, wanted in tails.items():
                    self._spawn(self._read_tail_group({topic: wanted}))
                return
            for wanted in tails.values():
                if not wanted.done():
                    wanted.set_exception(exc)
            return
        for wanted, newest in zip(tails.values(), results, strict=True):
            if not wanted.done():
                entries = cast(Entries, newest)
                wanted.set_result(parse_id(entries[0][0].decode()) if entries else ORIGIN)

    def _spawn(self, read: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(read)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def contains(self, topic: str, sid: StreamId) -> bool:
        text = format_id(sid)
        return bool(await self._read(topic, "XRANGE", text, text, "COUNT", 1))

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
            for sid, fields in entries:
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
        """One read command of the topic's stream, on the primary that holds it."""
        key = self._keys.stream(topic)
        words: Command = (command, key, *arguments)
        results = await self._primaries.run(key, lambda node: [words], idempotent=True)
        return results[0]

    def _forget(self, key: tuple[str, StreamId], read: _Read) -> None:
        if self._reads.get(key) is read:
            del self._reads[key]
