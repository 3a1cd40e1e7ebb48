"""The fan-out's state machines in process: live delivery, gaps and backfills, and resumes.

Each test runs a real `Fanout` and `History` over the real Redis (streams,
tails, trims), with a subscription the test drives: it hands the gateway the
announcements the publish script made, and only those it chooses, so a gap, a
repeat or a late message is exact and needs no fault injection. What each
client received is read from its fake socket, as a browser would parse it.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from core_fakes import Client, Core, Frame, Sent, core, wait_until

import hub.fanout
from hub import cursor
from hub.client_connection import REPLAY_WINDOW, Ending
from hub.events import ORIGIN, StreamId
from hub.fanout import Resume, Topic, Unavailable

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the core is asyncio code (call_soon, create_task)


def feed(c: Core, topic: str, *sent: Sent) -> None:
    """The subscription hears these announcements, in this order."""
    for event in sent:
        c.fanout.on_message(topic, event.message)


def expected(*sent: Sent) -> list[tuple[str | None, str]]:
    return [(event.text_id, event.data) for event in sent]


def reset_notice(frame: Frame) -> dict[str, str]:
    assert frame.event == "stream-reset", f"expected a stream-reset notice, got {frame}"
    assert frame.id is None, "a reset notice carries no id"
    notice: dict[str, str] = json.loads(frame.data)
    return notice


async def begin(c: Core, client: Client, after: list[StreamId]) -> tuple[list[Topic], list[Resume]]:
    topics = await c.fanout.acquire(client.connection.topics)
    return topics, await c.fanout.begin_resume(client.connection, topics, after)


def finish(c: Core, client: Client, resumes: list[Resume]) -> asyncio.Task[None]:
    """The gateway's replay task: each topic's history, paced, then live."""

    async def replay() -> None:
        for resume in resumes:
            await c.fanout.finish_resume(client.connection, resume)

    return asyncio.create_task(replay())


async def finished(task: asyncio.Task[None]) -> None:
    await asyncio.wait_for(task, 5.0)


# -- live delivery ----------------------------------------------------------------------------


async def test_live_events_reach_every_simple_client_once_in_order(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("news",))
        clients = [c.client("news") for _ in range(3)]
        for client in clients:
            c.fanout.attach(client.connection, topics)
        sent = await c.writer.publish_many("news", 5)
        feed(c, "news", *sent)
        for client in clients:
            await client.wait_frames(5)
            assert client.events == expected(*sent)
        assert c.fanout.counters.deliveries == 15
        assert c.fanout.counters.gaps_filled == 0


async def test_live_events_reach_a_composite_client_with_a_cursor_for_every_topic(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        b0 = await c.writer.publish("b", "b0")
        topics = await c.fanout.acquire(("a", "b"))
        both, only_a = c.client("a", "b"), c.client("a")
        c.fanout.attach(both.connection, topics)
        c.fanout.attach(only_a.connection, topics[:1])
        assert both.connection.positions == [ORIGIN, b0.id], (
            "a new client starts at the topics' tails"
        )
        a1 = await c.writer.publish("a", "a1")
        b1 = await c.writer.publish("b", "b1")
        a2 = await c.writer.publish("a", "a2")
        feed(c, "a", a1)
        feed(c, "b", b1)
        feed(c, "a", a2)
        frames = await both.wait_frames(3)
        assert [(frame.id, frame.data) for frame in frames] == [
            (cursor.encode([a1.id, b0.id]), "a1"),
            (cursor.encode([a1.id, b1.id]), "b1"),
            (cursor.encode([a2.id, b1.id]), "a2"),
        ]
        assert cursor.decode(frames[-1].id or "", 2) == [a2.id, b1.id]
        assert both.connection.cursor() == frames[-1].id
        await only_a.wait_frames(2)
        assert only_a.events == expected(a1, a2), "a one-topic client gets plain stream IDs"


async def test_a_repeated_or_old_live_message_is_not_delivered_again(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        s0, s1, s2 = await c.writer.publish_many("news", 3)
        feed(c, "news", s0, s1, s1, s0, s1)
        feed(c, "news", s2)  # arrives after the repeats: once it is there, they were handled
        await client.wait_frames(3)
        assert client.events == expected(s0, s1, s2)
        assert c.fanout.counters.events_received == 6
        assert c.fanout.counters.deliveries == 3
        assert c.fanout.counters.gaps_filled == 0
        assert topics[0].backlog is None, "a repeat is no gap: nothing was parked"


async def test_messages_of_unknown_topics_and_foreign_messages_are_ignored(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        s0, s1, s2 = await c.writer.publish_many("news", 3)
        c.fanout.on_message("other", s0.message)
        feed(c, "news", s0)
        c.fanout.on_message("news", b"not what the publish script announces")
        c.fanout.on_message("news", b"\xff\n0-0\n\ndata")
        feed(c, "news", s2)  # s1's announcement was unreadable: s2's prev shows the gap
        await client.wait_frames(3)
        assert client.events == expected(s0, s1, s2), (
            "the unreadable one's entry is read on the gap"
        )
        assert c.fanout.counters.gaps_filled == 1


# -- gaps and backfills ---------------------------------------------------------------------------


async def test_a_gap_parks_live_events_and_backfills_from_the_stream_in_order_once(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        [topic] = topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        s0, s1, s2 = await c.writer.publish_many("news", 3)
        feed(c, "news", s0)
        read = c.history.pause_next("news")
        feed(c, "news", s2)  # s1's announcement was lost: s2.prev is not the position
        await read.wait_reached()
        assert read.after == s0.id, "the backfill reads after the last event delivered"
        s3, s4 = await c.writer.publish_many("news", 2, "late")  # written after that read
        feed(c, "news", s3, s1, s4)
        assert topic.backlog is not None and [e.id for e in topic.backlog] == [
            s2.id,
            s3.id,
            s1.id,
            s4.id,
        ]
        read.release()
        await client.wait_frames(5)
        assert client.events == expected(s0, s1, s2, s3, s4)
        assert c.fanout.counters.gaps_filled == 1
        reads = [after for topic, after, _ in c.history.calls if topic == "news"]
        assert reads == [s0.id], "one backfill read; the parked events came from the backlog"
        assert topic.backlog is None, "caught up: live events go straight out again"
        s5 = await c.writer.publish("news", "s5")
        feed(c, "news", s5)
        await client.wait_frames(6)
        assert client.events[-1] == (s5.text_id, "s5")
        assert len(client.events) == 6


async def test_a_gap_among_the_parked_events_triggers_another_backfill(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        s0, s1, s2 = await c.writer.publish_many("news", 3)
        feed(c, "news", s0)
        read = c.history.pause_next("news")
        feed(c, "news", s2)
        await read.wait_reached()
        s3, s4, s5 = await c.writer.publish_many("news", 3, "late")
        feed(c, "news", s3, s5)  # s4's announcement is lost too, while parked
        read.release()
        await client.wait_frames(6)
        assert client.events == expected(s0, s1, s2, s3, s4, s5)
        reads = [after for topic, after, _ in c.history.calls if topic == "news"]
        assert reads == [s0.id, s3.id], "a second backfill, from the last event delivered"
        assert topics[0].backlog is None


async def test_a_backlog_over_its_limit_is_read_again_from_the_stream(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub.fanout, "BACKLOG_LIMIT", 2)
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        s0, s1, s2 = await c.writer.publish_many("news", 3)
        feed(c, "news", s0)
        read = c.history.pause_next("news")
        feed(c, "news", s2)
        await read.wait_reached()
        late = await c.writer.publish_many("news", 5, "late")
        feed(c, "news", *late)  # the backlog holds two; the rest is left to the stream
        assert topics[0].backlog is not None and len(topics[0].backlog) == 2
        assert topics[0].reread
        read.release()
        await client.wait_frames(8)
        assert client.events == expected(s0, s1, s2, *late)
        assert topics[0].backlog is None


async def test_a_malformed_live_event_keeps_its_place_and_moves_composite_cursors(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("a", "b"))
        simple, both = c.client("a"), c.client("a", "b")
        c.fanout.attach(simple.connection, topics[:1])
        c.fanout.attach(both.connection, topics)
        a0 = await c.writer.publish("a", "a0")
        bad = await c.writer.raw("a", {b"p": a0.text_id.encode(), b"t": b"not a type!", b"d": b"x"})
        a2 = await c.writer.publish("a", "a2")
        assert a2.prev == bad.id, "the script chains the next event onto the malformed entry"
        b1 = await c.writer.publish("b", "b1")
        feed(c, "a", a0, bad)
        assert both.connection.positions[0] == bad.id, "the cursor moves past what is never sent"
        feed(c, "b", b1)
        feed(c, "a", a2)
        await simple.wait_frames(2)
        assert simple.events == expected(a0, a2)
        frames = await both.wait_frames(3)
        assert [(frame.id, frame.data) for frame in frames] == [
            (cursor.encode([a0.id, ORIGIN]), "a0"),
            (cursor.encode([bad.id, b1.id]), "b1"),
            (cursor.encode([a2.id, b1.id]), "a2"),
        ]
        assert c.fanout.counters.malformed_skipped == 1
        assert c.fanout.counters.gaps_filled == 0, "a malformed event is no gap"


async def test_a_malformed_entry_read_on_a_backfill_is_skipped_in_its_place(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("a", "b"))
        simple, both = c.client("a"), c.client("a", "b")
        c.fanout.attach(simple.connection, topics[:1])
        c.fanout.attach(both.connection, topics)
        a0 = await c.writer.publish("a", "a0")
        bad = await c.writer.raw("a", {b"p": a0.text_id.encode(), b"t": b"", b"d": b"\xff\xfe"})
        a2 = await c.writer.publish("a", "a2")
        feed(c, "a", a0, a2)  # the malformed entry was never announced: a gap
        await simple.wait_frames(2)
        assert simple.events == expected(a0, a2)
        frames = await both.wait_frames(2)
        assert [frame.id for frame in frames] == [
            cursor.encode([a0.id, ORIGIN]),
            cursor.encode([a2.id, ORIGIN]),
        ]
        assert bad.id < a2.id and topics[0].position == a2.id
        assert c.fanout.counters.malformed_skipped == 1


async def test_a_backfill_that_finds_the_stream_trimmed_past_the_position_tells_every_client(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("a", "b"))
        simple, both = c.client("a"), c.client("a", "b")
        c.fanout.attach(simple.connection, topics[:1])
        c.fanout.attach(both.connection, topics)
        s = await c.writer.publish_many("a", 6)
        feed(c, "a", s[0])
        await c.writer.trim("a", 2)  # s1..s3 are gone before the gateway hears of them
        feed(c, "a", s[5])
        for client in (simple, both):
            frames = await client.wait_frames(4)
            assert [frame.data for frame in frames if frame.event == "message"] == [
                "e0",
                "e4",
                "e5",
            ]
            assert reset_notice(frames[1])["first_kept"] == s[4].text_id
        assert both.frames[-1].id == cursor.encode([s[5].id, ORIGIN])


async def test_a_resubscription_backfills_what_went_by_while_the_subscription_was_down(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        [topic] = topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        s0, s1, s2 = await c.writer.publish_many("news", 3)
        feed(c, "news", s0)
        # s1 and s2 are announced while the subscription is down; Redis confirms it again:
        read = c.history.pause_next("news")
        c.fanout.on_subscribed("news")
        await read.wait_reached()
        c.fanout.on_subscribed("news")  # twice (two confirmations): still one backfill
        read.release()
        await client.wait_frames(3)
        assert client.events == expected(s0, s1, s2)
        assert [after for _, after, _ in c.history.calls] == [s0.id]
        await wait_until(lambda: topic.backlog is None, lambda: topic.backlog)
        s3 = await c.writer.publish("news", "s3")
        feed(c, "news", s3)
        await client.wait_frames(4)
        assert client.events[-1] == (s3.text_id, "s3")


async def test_a_backfill_that_fails_is_tried_again_until_redis_answers(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        c.primaries.fail = 1  # even the first read of the topic's tail
        topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        s0, s1, s2 = await c.writer.publish_many("news", 3)
        feed(c, "news", s0)
        c.primaries.fail = 2
        feed(c, "news", s2)
        await client.wait_frames(3)
        assert client.events == expected(s0, s1, s2)
        assert c.primaries.fail == 0


# -- membership -----------------------------------------------------------------------------------


async def test_a_topic_is_released_and_unsubscribed_when_its_last_client_leaves(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("news",))
        first, second = c.client("news"), c.client("news")
        c.fanout.attach(first.connection, topics)
        c.fanout.attach(second.connection, topics)
        c.fanout.detach(first.connection)
        assert c.fanout.topic_names() == ["news"]
        await second.close()  # a disconnect detaches it, as the gateway's on_end does
        await wait_until(lambda: second.endings == [Ending.DISCONNECTED], lambda: second.endings)
        assert c.fanout.topic_names() == []
        await wait_until(
            lambda: c.subscription.unsubscribed == ["news"], lambda: c.subscription.unsubscribed
        )
        assert c.subscription.subscribed == ["news"]


async def test_a_topic_wanted_again_before_it_is_unsubscribed_stays_subscribed(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        c.fanout.detach(client.connection)
        again = await c.fanout.acquire(("news",))  # before the unsubscribe ran
        assert again[0] is not topics[0], "a released topic starts over"
        late = c.client("news")
        c.fanout.attach(late.connection, again)
        s0 = await c.writer.publish("news", "s0")
        feed(c, "news", s0)
        await late.wait_frames(1)
        assert c.subscription.unsubscribed == []
        assert c.subscription.subscribed == ["news", "news"]


async def test_acquire_gives_up_when_redis_does_not_confirm_the_subscription(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix, redis_timeout=0.2) as c:
        c.subscription.confirm = False
        with pytest.raises(Unavailable):
            await c.fanout.acquire(("news",))
        assert c.fanout.topic_names() == [], "an unconfirmed topic is not kept"
        await wait_until(
            lambda: c.subscription.unsubscribed == ["news"], lambda: c.subscription.unsubscribed
        )


# -- resuming --------------------------------------------------------------------------------------


async def test_a_resume_replays_what_was_missed_then_goes_live(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s = await c.writer.publish_many("news", 5)
        client = c.client("news")
        [topic], [resume] = await begin(c, client, [s[1].id])
        assert not resume.truncated
        assert client.connection.positions == [s[1].id]
        await finished(finish(c, client, [resume]))
        assert client.connection in topic.simple and client.connection not in topic.joining
        s5 = await c.writer.publish("news", "s5")
        feed(c, "news", s5)
        await client.wait_frames(4)
        assert client.events == expected(s[2], s[3], s[4], s5)
        assert c.fanout.counters.events_replayed == 3


async def test_live_events_during_the_history_read_are_kept_and_sent_once_after_it(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s0, s1 = await c.writer.publish_many("news", 2)
        client = c.client("news")
        topics = await c.fanout.acquire(("news",))
        read = c.history.pause_next("news")
        starting = asyncio.create_task(c.fanout.begin_resume(client.connection, topics, [s0.id]))
        await read.wait_reached()  # the history is read; the client is registered
        live = await c.writer.publish_many("news", 3, "live")
        feed(c, "news", *live)
        assert [framed.event.id for framed in topics[0].joining[client.connection].pending] == [
            event.id for event in live
        ]
        read.release()
        [resume] = await starting
        assert [framed.event.id for framed in resume.first_page.events] == [s1.id]
        await finished(finish(c, client, [resume]))
        await client.wait_frames(4)
        assert client.events == expected(s1, *live)


async def test_history_that_already_holds_the_kept_live_events_sends_each_once(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s0, s1 = await c.writer.publish_many("news", 2)
        topics = await c.fanout.acquire(("news",))
        s2, s3 = await c.writer.publish_many("news", 2, "unheard")  # not announced yet
        client = c.client("news")
        [resume] = await c.fanout.begin_resume(client.connection, topics, [s0.id])
        assert [framed.event.id for framed in resume.first_page.events] == [s1.id, s2.id, s3.id]
        s4 = await c.writer.publish("news", "s4")
        feed(c, "news", s2, s3, s4)  # the announcements come after the read
        await finished(finish(c, client, [resume]))
        await client.wait_frames(4)
        assert client.events == expected(s1, s2, s3, s4)


async def test_a_history_read_ahead_of_the_live_feed_waits_for_the_feed_to_get_there(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s0, s1 = await c.writer.publish_many("news", 2)
        [topic] = topics = await c.fanout.acquire(("news",))
        s2, s3 = await c.writer.publish_many("news", 2, "ahead")  # in the stream, not yet announced
        client = c.client("news")
        [resume] = await c.fanout.begin_resume(client.connection, topics, [s0.id])
        replay = finish(c, client, [resume])
        await client.wait_frames(3)
        assert client.events == expected(s1, s2, s3)
        assert not replay.done(), "the replay is ahead of the live feed: it must wait for it"
        assert client.connection in topic.joining
        feed(c, "news", s2)
        await asyncio.sleep(0)
        assert not replay.done(), "the feed is not at s3 yet"
        feed(c, "news", s3)
        await finished(replay)
        s4 = await c.writer.publish("news", "s4")
        feed(c, "news", s4)
        await client.wait_frames(4)
        assert client.events == expected(s1, s2, s3, s4)


async def test_a_cursor_older_than_the_retained_history_gets_a_reset_notice_first(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s = await c.writer.publish_many("news", 5)
        await c.writer.trim("news", 2)
        client = c.client("news")
        _, [resume] = await begin(c, client, [s[0].id])
        assert resume.truncated
        await finished(finish(c, client, [resume]))
        s5 = await c.writer.publish("news", "s5")
        feed(c, "news", s5)
        frames = await client.wait_frames(4)
        assert reset_notice(frames[0]) == {
            "topic": "news",
            "reason": "history-truncated",
            "first_kept": s[3].text_id,
        }
        assert client.events == expected(s[3], s[4], s5)


async def test_a_cursor_from_a_history_that_is_gone_resumes_from_the_tail_with_a_notice(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s = await c.writer.publish_many("news", 3)
        client = c.client("news")
        unknown = (s[2].id[0] + 60_000, 0)  # from a Redis that lost its data since
        _, [resume] = await begin(c, client, [unknown])
        assert resume.truncated and resume.after == s[2].id
        assert client.connection.positions == [s[2].id], "the cursor starts again at the tail"
        await finished(finish(c, client, [resume]))
        s3 = await c.writer.publish("news", "s3")
        feed(c, "news", s3)
        frames = await client.wait_frames(2)
        assert reset_notice(frames[0])["first_kept"] == ""
        assert client.events == expected(s3)


async def test_a_cursor_at_the_tail_resumes_without_notice_or_replay(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s = await c.writer.publish_many("news", 3)
        client = c.client("news")
        _, [resume] = await begin(c, client, [s[2].id])
        assert not resume.truncated
        await finished(finish(c, client, [resume]))
        s3 = await c.writer.publish("news", "s3")
        feed(c, "news", s3)
        await client.wait_frames(1)
        assert client.frames == [Frame(s3.text_id, "message", "s3")]


@pytest.mark.parametrize("history", [0, 3], ids=["empty-topic", "three-events"])
async def test_a_zero_cursor_replays_the_whole_history_without_notice(
    redis_url: str, key_prefix: str, history: int
) -> None:
    async with core(redis_url, key_prefix) as c:
        s = await c.writer.publish_many("news", history)
        client = c.client("news")
        _, [resume] = await begin(c, client, [ORIGIN])
        assert not resume.truncated
        await finished(finish(c, client, [resume]))
        last = await c.writer.publish("news", "last")
        feed(c, "news", last)
        await client.wait_frames(history + 1)
        assert client.frames == [Frame(e.text_id, "message", e.data) for e in (*s, last)]


@pytest.mark.parametrize(
    ("page_size", "page_bytes"), [(3, 262_144), (1000, 300)], ids=["by-count", "by-bytes"]
)
async def test_a_history_longer_than_a_page_is_replayed_page_by_page_while_live_events_come(
    redis_url: str, key_prefix: str, page_size: int, page_bytes: int
) -> None:
    async with core(redis_url, key_prefix, page_size=page_size, page_bytes=page_bytes) as c:
        s = await c.writer.publish_many("news", 40)
        client = c.client("news")
        [topic], [resume] = await begin(c, client, [s[0].id])
        assert not resume.first_page.complete
        replay = finish(c, client, [resume])
        live = []
        for n in range(5):  # published and announced while the pages are read
            live.append(await c.writer.publish("news", f"live{n}"))
            feed(c, "news", live[-1])
        await finished(replay)
        await client.wait_frames(44)
        assert client.events == expected(*s[1:], *live)
        pages = [call for call in c.history.calls if call[0] == "news"]
        assert len(pages) >= 3, f"several pages were read: {pages}"
        assert client.connection in topic.simple


async def test_a_resume_whose_kept_live_events_overflow_reads_them_from_the_stream(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub.fanout, "JOIN_PENDING_LIMIT", 2)
    async with core(redis_url, key_prefix) as c:
        s0, s1, s2 = await c.writer.publish_many("news", 3)
        client = c.client("news")
        [topic], [resume] = await begin(c, client, [s0.id])
        live = await c.writer.publish_many("news", 5, "live")
        feed(c, "news", *live)
        pending = topic.joining[client.connection].pending
        assert [framed.event.id for framed in pending] == [live[3].id, live[4].id], "overflowed"
        await finished(finish(c, client, [resume]))
        await client.wait_frames(7)
        assert client.events == expected(s1, s2, *live)
        assert not any(frame.event == "stream-reset" for frame in client.frames)


async def test_history_trimmed_away_during_the_read_is_told_and_the_client_goes_live(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub.fanout, "JOIN_PENDING_LIMIT", 1)
    async with core(redis_url, key_prefix) as c:
        s0, s1 = await c.writer.publish_many("news", 2)
        client = c.client("news")
        [topic], [resume] = await begin(c, client, [s0.id])
        s2, s3, s4 = await c.writer.publish_many("news", 3, "live")
        feed(c, "news", s2, s3, s4)  # kept: only s4 (s3 overflowed and cleared the list)
        await c.writer.trim("news", 0)  # and the stream loses everything meanwhile
        await finished(finish(c, client, [resume]))
        assert client.connection in topic.simple
        frames = await client.wait_frames(3)
        assert frames[0] == Frame(s1.text_id, "message", s1.data)
        assert reset_notice(frames[1])["first_kept"] == s4.text_id
        assert frames[2] == Frame(s4.text_id, "message", s4.data)
        # The stream starts over (s5's prev is 0-0): the topic's own backfill says so too.
        s5 = await c.writer.publish("news", "s5")
        feed(c, "news", s5)
        frames = await client.wait_frames(5)
        assert reset_notice(frames[3])["first_kept"] == s5.text_id
        assert client.events == expected(s1, s4, s5)


async def test_history_trimmed_between_two_pages_of_a_replay_is_told(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix, page_size=3) as c:
        s = await c.writer.publish_many("news", 10)
        client = c.client("news")
        _, [resume] = await begin(c, client, [s[0].id])
        assert [framed.event.id for framed in resume.first_page.events] == [e.id for e in s[1:4]]
        await c.writer.trim("news", 3)  # s4..s6 go while the client reads its first page
        await finished(finish(c, client, [resume]))
        frames = await client.wait_frames(6)
        assert [frame.data for frame in frames if frame.event == "message"] == [
            "e1",
            "e2",
            "e3",
            "e7",
            "e8",
            "e9",
        ]
        notices = [reset_notice(frame) for frame in frames if frame.event != "message"]
        assert [notice["first_kept"] for notice in notices] == [s[7].text_id]


async def test_history_trimmed_between_two_pages_of_a_backfill_is_told(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix, page_size=3) as c:
        topics = await c.fanout.acquire(("news",))
        client = c.client("news")
        c.fanout.attach(client.connection, topics)
        s = await c.writer.publish_many("news", 10)
        feed(c, "news", s[0])
        read = c.history.pause_next("news")
        feed(c, "news", s[9])  # a gap of eight events
        await read.wait_reached()
        await c.writer.trim("news", 3)  # s4..s6 go between the backfill's first and second page
        read.release()
        await wait_until(lambda: topics[0].position == s[9].id, lambda: topics[0].position)
        frames = await client.wait_frames(7)
        assert [frame.data for frame in frames if frame.event == "message"] == [
            "e0",
            "e1",
            "e2",
            "e3",
            "e7",
            "e8",
            "e9",
        ]
        notices = [reset_notice(frame) for frame in frames if frame.event != "message"]
        assert [notice["first_kept"] for notice in notices] == [s[7].text_id]


async def test_a_composite_resume_replays_each_topic_with_composite_cursors(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        a0, a1 = await c.writer.publish_many("a", 2, "a")
        bad = await c.writer.raw("a", {b"p": a1.text_id.encode(), b"t": b"hub-forged", b"d": b"x"})
        a3 = await c.writer.publish("a", "a3")
        b0, b1 = await c.writer.publish_many("b", 2, "b")
        client = c.client("a", "b")
        topics, resumes = await begin(c, client, [a0.id, b0.id])
        assert [resume.truncated for resume in resumes] == [False, False]
        await finished(finish(c, client, resumes))
        b2 = await c.writer.publish("b", "b2")
        feed(c, "b", b2)
        frames = await client.wait_frames(4)
        assert [(frame.id, frame.data) for frame in frames] == [
            (cursor.encode([a1.id, b0.id]), "a1"),
            (cursor.encode([a3.id, b0.id]), "a3"),
            (cursor.encode([a3.id, b1.id]), "b1"),
            (cursor.encode([a3.id, b2.id]), "b2"),
        ]
        assert client.connection.positions == [a3.id, b2.id]
        assert bad.id < a3.id
        assert client.connection in topics[0].composite and client.connection in topics[1].composite


async def test_a_composite_replay_moves_the_cursor_past_a_malformed_last_entry(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        a0 = await c.writer.publish("a", "a0")
        bad = await c.writer.raw("a", {b"p": a0.text_id.encode(), b"t": b"", b"d": b"\xff"})
        b0 = await c.writer.publish("b", "b0")
        client = c.client("a", "b")
        _, resumes = await begin(c, client, [a0.id, ORIGIN])
        await finished(finish(c, client, resumes))
        frames = await client.wait_frames(1)
        assert frames == [Frame(cursor.encode([bad.id, b0.id]), "message", "b0")]


async def test_a_replay_passes_a_malformed_entry_without_sending_it(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s0 = await c.writer.publish("news", "s0")
        bad = await c.writer.raw("news", {b"p": s0.text_id.encode(), b"t": b"", b"d": b"\xff"})
        s2 = await c.writer.publish("news", "s2")
        client = c.client("news")
        _, [resume] = await begin(c, client, [ORIGIN])
        await finished(finish(c, client, [resume]))
        await client.wait_frames(2)
        assert client.events == expected(s0, s2)
        assert bad.id < s2.id


async def test_a_composite_resume_goes_live_with_the_kept_events_under_composite_cursors(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        a0, a1 = await c.writer.publish_many("a", 2, "a")
        b0 = await c.writer.publish("b", "b0")
        client = c.client("a", "b")
        _, resumes = await begin(c, client, [a0.id, b0.id])
        a2 = await c.writer.publish("a", "a2")  # announced while the client reads its history
        bad = await c.writer.raw("a", {b"p": a2.text_id.encode(), b"t": b"bad type", b"d": b"x"})
        a4 = await c.writer.publish("a", "a4")
        feed(c, "a", a2, bad, a4)
        await finished(finish(c, client, resumes))
        frames = await client.wait_frames(3)
        assert [(frame.id, frame.data) for frame in frames] == [
            (cursor.encode([a1.id, b0.id]), "a1"),
            (cursor.encode([a2.id, b0.id]), "a2"),
            (cursor.encode([a4.id, b0.id]), "a4"),
        ]
        assert client.connection.positions == [a4.id, b0.id]
        assert bad.id < a4.id


async def test_a_client_that_stops_reading_is_dropped_while_its_replay_is_paced(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        data = "x" * 2000
        s = [await c.writer.publish("news", data) for _ in range(80)]
        # A socket that truly holds the write (bare yields: see ClientConnection's `_resume`).
        client = c.client("news", limit=1 << 20, waits_on="yield")
        client.socket.draining.clear()  # it reads nothing
        [topic], [resume] = await begin(c, client, [ORIGIN])
        replay = finish(c, client, [resume])
        await wait_until(
            lambda: client.socket.waiting == 1 and client.connection in c.flusher.stalled,
            lambda: (client.socket.waiting, [len(body) for body in client.socket.bodies]),
        )
        assert not replay.done(), "the replay waits for the socket"
        assert len(client.socket.bodies) == 1 and len(client.socket.bodies[0]) <= REPLAY_WINDOW
        assert c.flusher.drop_stalled(60.0) == 0, "not stalled for long yet"
        assert c.flusher.drop_stalled(0.0) == 1
        await finished(replay)
        await wait_until(lambda: client.endings == [Ending.SLOW], lambda: client.endings)
        await wait_until(
            lambda: client.socket.waiting == 0, lambda: "the stalled write is still held"
        )
        assert len(client.events) < len(s)
        assert client.connection not in topic.joining
        await wait_until(
            lambda: c.subscription.unsubscribed == ["news"], lambda: c.subscription.unsubscribed
        )


async def test_a_replay_goes_out_in_window_sized_writes_whole_and_in_order(
    redis_url: str, key_prefix: str
) -> None:
    async with core(redis_url, key_prefix) as c:
        s = [await c.writer.publish("news", f"{n}:" + "x" * 2000) for n in range(60)]
        big = await c.writer.publish("news", "y" * (REPLAY_WINDOW + 100))
        s += [big, *[await c.writer.publish("news", f"after {n}") for n in range(3)]]
        client = c.client("news")
        _, resumes = await begin(c, client, [s[4].id])
        await finished(finish(c, client, resumes))
        await client.wait_frames(len(s) - 5)
        assert [frame.id for frame in client.frames] == [sent.text_id for sent in s[5:]]
        writes = [len(body) for body in client.socket.bodies]
        assert sum(writes) == len(client.socket.stream)
        assert all(size <= REPLAY_WINDOW for size in writes if size < REPLAY_WINDOW + 100), writes
        assert len(writes) < len(s) // 10, "many events per write"
