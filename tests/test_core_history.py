"""History reads in process, against the real Redis: shared reads, fresh reads, page bounds.

Redis's own answers matter here (what `XRANGE` returns, exclusive ranges,
trims), so the reads go to the real server under the test's key prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio
from core_fakes import FlakyPrimaries, Sent, Writer
from redis.exceptions import ConnectionError as RedisConnectionError

import hub.history
from hub import topology
from hub.events import ORIGIN, StreamId
from hub.history import FIRST_STEP, History, Page
from hub.mercure.dispatch import Replayer
from hub.mercure.record import Update, partition_topic, position
from hub.topics import Keys

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def reading(
    redis_url: str, key_prefix: str, page_size: int = 1000, page_bytes: int = 262_144
) -> AsyncIterator[tuple[History, Writer, FlakyPrimaries]]:
    keys = Keys(key_prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        primaries = FlakyPrimaries(topology.from_url(redis_url, 5.0), 4, 5.0)
        async with primaries:
            yield History(primaries, keys, page_size, page_bytes), Writer(client, keys), primaries
    finally:
        await client.aclose()


def ids(page: Page) -> list[StreamId]:
    return [framed.event.id for framed in page.events]


def entry_bytes(sent: Sent) -> int:
    """What `History` counts of an entry: the bytes of its field values (p, t, d)."""
    return len(sent.message) - 3 - len(sent.text_id)


async def all_pages(history: History, topic: str, after: StreamId) -> list[Page]:
    pages = [await history.page_after(topic, after)]
    while not pages[-1].complete:
        pages.append(await history.page_after(topic, pages[-1].events[-1].event.id))
    return pages


async def test_concurrent_reads_of_the_same_place_share_one_read(
    redis_url: str, key_prefix: str
) -> None:
    async with reading(redis_url, key_prefix) as (history, writer, _):
        s = await writer.publish_many("news", 5)
        pages = await asyncio.gather(*(history.page_after("news", s[0].id) for _ in range(5)))
        assert all(page is pages[0] for page in pages), "one page, framed once, for all"
        assert ids(pages[0]) == [e.id for e in s[1:]] and pages[0].complete
        assert history.reads_done == 1
        again = await history.page_after("news", s[0].id)
        assert again is pages[0], "a read is shared for a while after it finished"
        other = await history.page_after("news", s[1].id)
        assert ids(other) == [e.id for e in s[2:]]
        assert history.reads_done == 2, "another place is another read"


async def test_not_before_asks_for_a_read_started_after_a_moment(
    redis_url: str, key_prefix: str
) -> None:
    async with reading(redis_url, key_prefix) as (history, writer, _):
        s0, s1 = await writer.publish_many("news", 2)
        first = await history.page_after("news", s0.id)
        moment = history.ticket()
        s2 = await writer.publish("news", "s2")
        stale = await history.page_after("news", s0.id)
        assert stale is first and ids(stale) == [s1.id], "shared: without not_before, no new read"
        fresh = await history.page_after("news", s0.id, not_before=moment)
        assert ids(fresh) == [s1.id, s2.id]
        assert await history.page_after("news", s0.id, not_before=moment) is fresh, (
            "a read started after the moment is shared too"
        )
        assert history.reads_done == 2


async def test_a_failed_read_fails_all_its_readers_and_is_not_kept(
    redis_url: str, key_prefix: str
) -> None:
    async with reading(redis_url, key_prefix) as (history, writer, primaries):
        s0, s1 = await writer.publish_many("news", 2)
        primaries.fail = 1
        results = await asyncio.gather(
            *(history.page_after("news", s0.id) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(result, RedisConnectionError) for result in results), results
        page = await history.page_after("news", s0.id)
        assert ids(page) == [s1.id], "the next reader reads again"


async def test_a_read_is_forgotten_after_its_sharing_time(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub.history, "SHARE_SECONDS", 0.05)
    async with reading(redis_url, key_prefix) as (history, writer, _):
        s0, s1 = await writer.publish_many("news", 2)
        first = await history.page_after("news", s0.id)
        s2 = await writer.publish("news", "s2")
        deadline = time.monotonic() + 5.0
        page = first
        while page is first:
            assert time.monotonic() < deadline, "the read was never forgotten"
            await asyncio.sleep(0.01)
            page = await history.page_after("news", s0.id)
        assert ids(page) == [s1.id, s2.id]


@pytest.mark.parametrize(("events", "sizes"), [(10, [4, 4, 2]), (8, [4, 4, 0]), (3, [3])])
async def test_pages_hold_at_most_page_size_events_and_the_last_one_is_complete(
    redis_url: str, key_prefix: str, events: int, sizes: list[int]
) -> None:
    async with reading(redis_url, key_prefix, page_size=4) as (history, writer, _):
        s = await writer.publish_many("news", events)
        pages = await all_pages(history, "news", ORIGIN)
        assert [len(page.events) for page in pages] == sizes
        assert [page.complete for page in pages] == [False] * (len(sizes) - 1) + [True]
        assert [i for page in pages for i in ids(page)] == [e.id for e in s], (
            "each event once, in order"
        )


async def test_pages_hold_about_page_bytes_read_in_steps_sized_by_the_largest_entry(
    redis_url: str, key_prefix: str
) -> None:
    page_bytes = 2000
    async with reading(redis_url, key_prefix, page_bytes=page_bytes) as (history, writer, _):
        s = [await writer.publish("news", "x" * 20) for _ in range(150)]
        size = {e.id: entry_bytes(e) for e in s}
        largest = max(size.values())
        smallest = min(size[e.id] for e in s[1:])  # the first one's `p` is a short 0-0
        pages = await all_pages(history, "news", ORIGIN)
        assert len(pages) >= 3
        for page in pages[:-1]:
            held = sum(size[i] for i in ids(page))
            # Entries differ by a byte or two (their `p` IDs): a step sized by the largest
            # entry seen so far may overshoot by that much per entry.
            slack = len(page.events) * (largest - smallest)
            assert page_bytes - largest < held <= page_bytes + slack, (
                f"a page of {held} bytes in {len(page.events)} events (bound {page_bytes})"
            )
            assert len(page.events) > FIRST_STEP, "steps after the first fill the page"
        assert pages[-1].complete
        assert [i for page in pages for i in ids(page)] == [e.id for e in s]


async def test_a_page_of_large_entries_stops_after_its_first_step(
    redis_url: str, key_prefix: str
) -> None:
    async with reading(redis_url, key_prefix, page_bytes=1000) as (history, writer, _):
        s = [await writer.publish("news", "y" * 5000) for _ in range(FIRST_STEP + 5)]
        page = await history.page_after("news", ORIGIN)
        assert ids(page) == [e.id for e in s[:FIRST_STEP]] and not page.complete
        rest = await history.page_after("news", s[FIRST_STEP - 1].id)
        assert ids(rest) == [e.id for e in s[FIRST_STEP:]] and rest.complete


async def test_malformed_entries_keep_their_place_in_a_page_unframed(
    redis_url: str, key_prefix: str
) -> None:
    async with reading(redis_url, key_prefix) as (history, writer, _):
        s0 = await writer.publish("news", "s0")
        bad_prev = await writer.raw("news", {b"p": b"yesterday", b"t": b"", b"d": b"x"})
        bad_type = await writer.raw(
            "news", {b"p": bad_prev.text_id.encode(), b"t": b"a b", b"d": b"x"}
        )
        bad_data = await writer.raw("news", {b"p": bad_type.text_id.encode(), b"d": b"\xc3\x28"})
        s4 = await writer.publish("news", "line one\r\nline two", "log")
        page = await history.page_after("news", ORIGIN)
        assert ids(page) == [s0.id, bad_prev.id, bad_type.id, bad_data.id, s4.id]
        assert [bool(framed.event.malformed) for framed in page.events] == [
            False,
            True,
            True,
            True,
            False,
        ]
        assert [framed.frame for framed in page.events[1:4]] == [b"", b"", b""]
        assert page.events[4].frame == (
            f"id: {s4.text_id}\nevent: log\ndata: line one\ndata: line two\n\n".encode()
        )
        assert page.events[4].event.prev == bad_data.id
        assert history.malformed_skipped == 3


async def test_tail_and_contains_read_the_stream_as_it_is(redis_url: str, key_prefix: str) -> None:
    async with reading(redis_url, key_prefix) as (history, writer, _):
        assert await history.tail("news") == ORIGIN, "a topic with no events"
        s = await writer.publish_many("news", 3)
        assert await history.tail("news") == s[2].id
        assert await history.contains("news", s[1].id)
        await writer.trim("news", 1)
        assert not await history.contains("news", s[1].id)
        assert not await history.contains("news", (s[2].id[0], s[2].id[1] + 1))
        assert await history.tail("news") == s[2].id
        assert (await history.page_after("news", s[0].id)).events[0].event.prev == s[1].id, (
            "what follows a trimmed cursor shows it: its prev is not the cursor"
        )


async def test_the_reads_asked_for_together_go_in_one_round_trip(
    redis_url: str, key_prefix: str
) -> None:
    async with reading(redis_url, key_prefix) as (history, writer, primaries):
        newest = {
            f"user/{n}": (await writer.publish_many(f"user/{n}", n % 3))[-1:] for n in range(50)
        }
        calls = primaries.calls
        tails = await asyncio.gather(
            *(history.tail(topic) for topic in newest), history.tail("none")
        )
        assert tails[:50] == [sent[0].id if sent else ORIGIN for sent in newest.values()]
        assert tails[50] == ORIGIN
        pages = await asyncio.gather(*(history.page_after(topic, ORIGIN) for topic in newest))
        assert [len(page.events) for page in pages] == [n % 3 for n in range(50)]
        assert primaries.calls == calls + 2, "one round trip for the tails, one for the pages"


async def test_a_failed_tail_read_fails_only_its_callers_and_the_next_one_reads_again(
    redis_url: str, key_prefix: str
) -> None:
    async with reading(redis_url, key_prefix) as (history, writer, primaries):
        sent = await writer.publish_many("news", 2)
        primaries.fail = 3  # the reads sent together, then each on its own
        with pytest.raises(RedisConnectionError):
            await asyncio.gather(history.tail("news"), history.tail("sports"))
        assert primaries.fail == 0
        assert await history.tail("news") == sent[-1].id


async def test_a_mercure_replay_reads_past_a_complete_page_read_before_its_end(
    redis_url: str, key_prefix: str
) -> None:
    """A dead gateway's streams resume on another: a stream that resumes once an update
    was released must not be served a shared page read before that update was written
    (complete then, short now), or it never gets the update."""
    topic = partition_topic(0)
    async with reading(redis_url, key_prefix) as (history, writer, _):
        replayer = Replayer(history, 1)
        first = await writer.publish(topic, Update(("a",), "first").envelope())
        before = await history.page_after(topic, first.id)  # another stream's replay
        assert before.complete and before.events == []
        second = await writer.publish(topic, Update(("a",), "second").envelope())
        start, end = position(0, first.id), position(0, second.id)
        # Without a ticket from after the release, the shared page is the stale one.
        stale = [s async for s in replayer.between(start, end, 0)]
        assert stale == [], "the shared page is the stale one this test guards against"
        # A ticket taken once the update was released asks for a read started later.
        replayed = [s async for s in replayer.between(start, end, history.ticket())]
        assert [s.update.data for s in replayed] == ["second"]
