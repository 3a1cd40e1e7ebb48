"""Publishing many events at once: `publish_many`, and publishes that share round trips.

Against the real Redis (or private servers where a test must stop one, or empty
its script cache) and, for `HttpPublisher`, a real gateway: what each call
returns is checked against what the streams hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import jwt
import pytest
import redis
from processes import Gateways, RedisServers, free_port
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from sse_client import ids_increase, publisher, stream_entries

from hub import topology
from hub.config import Settings
from hub.events import EventTooLarge, InvalidEvent
from hub.primaries import Primaries
from hub.publish import EventWriter, NotReplicated, NotSent
from hub.redis_wire import pack
from hub.topics import InvalidTopic, Keys
from publisher import NotAllPublished, Publisher
from publisher.http import HttpPublisher, PublishRefused

pytestmark = pytest.mark.anyio
SECRET = "a-test-secret-of-at-least-32-bytes!"


async def test_publish_many_writes_every_topic_in_order(redis_url: str, key_prefix: str) -> None:
    topics = [f"many/{n}" for n in range(20)]
    # Over a thousand events: the library writes them a thousand at a time.
    events = [(topics[n % 20], f"event {n}", "even" if n % 2 == 0 else "") for n in range(2_500)]
    async with publisher(redis_url, key_prefix) as hub:
        ids = await hub.publish_many(events)
    assert len(ids) == len(events)  # stream IDs are unique within a topic, not across
    for topic in topics:
        sent = [(event_id, e) for event_id, e in zip(ids, events, strict=True) if e[0] == topic]
        held = stream_entries(redis_url, key_prefix, topic)
        assert [(i, t, d) for i, t, d in held] == [(i, e[2], e[1]) for i, e in sent]
        assert ids_increase([i for i, _, _ in held])


async def test_publish_many_takes_pairs_and_triples_and_an_empty_batch(
    redis_url: str, key_prefix: str
) -> None:
    async with publisher(redis_url, key_prefix) as hub:
        assert await hub.publish_many([]) == []
        pairs_and_triples: list[tuple[str, str] | tuple[str, str, str]] = [
            ("t", "a"),
            ("t", "b", "typed"),
        ]
        ids = await hub.publish_many(iter(pairs_and_triples))
    assert stream_entries(redis_url, key_prefix, "t") == [(ids[0], "", "a"), (ids[1], "typed", "b")]


def test_the_sync_publisher_publishes_many(redis_url: str, key_prefix: str) -> None:
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix)
    with Publisher(settings) as hub:
        ids = hub.publish_many([("s", str(n)) for n in range(300)])
        one = hub.publish("s", "after")
    held = stream_entries(redis_url, key_prefix, "s")
    assert [i for i, _, _ in held] == [*ids, one]
    assert [d for _, _, d in held] == [*map(str, range(300)), "after"]


@pytest.mark.parametrize(
    ("bad", "error"),
    [(("no spaces", "x"), InvalidTopic), (("t", "x", "stream-reset"), InvalidEvent),
     (("t", "x" * 2_000), EventTooLarge)],
)  # fmt: skip
async def test_an_invalid_event_refuses_the_batch_before_anything_is_sent(
    redis_url: str, key_prefix: str, bad: tuple[str, ...], error: type[Exception]
) -> None:
    events = [("t", "first"), bad, ("t", "last")]
    async with publisher(redis_url, key_prefix, max_event_bytes=1_000) as hub:
        with pytest.raises(error):
            await hub.publish_many(events)  # type: ignore[arg-type]
    assert stream_entries(redis_url, key_prefix, "t") == []


async def test_concurrent_publishes_share_one_round_trip_in_call_order(
    private_redis: RedisServers, key_prefix: str
) -> None:
    server = private_redis()
    with redis.Redis.from_url(server.url) as admin:
        async with publisher(server.url, key_prefix) as hub:
            await hub.publish("warm", "up")  # the connection is made, the script loaded
            before = admin.info("stats")
            ids = await asyncio.gather(*(hub.publish("t", str(n)) for n in range(500)))
            after = admin.info("stats")
    # Made during one turn of the event loop, the 500 publishes went as one pipeline on
    # the connection already open (one read of the commands, one write of the replies).
    assert after["total_connections_received"] == before["total_connections_received"]
    assert after["total_commands_processed"] - before["total_commands_processed"] >= 500
    held = stream_entries(server.url, key_prefix, "t")
    assert [d for _, _, d in held] == [str(n) for n in range(500)]
    assert [i for i, _, _ in held] == ids


async def test_a_publish_cancelled_before_it_is_sent_is_not_sent_and_the_others_are(
    redis_url: str, key_prefix: str
) -> None:
    async with publisher(redis_url, key_prefix) as hub:
        tasks = [asyncio.create_task(hub.publish("t", str(n))) for n in range(10)]
        await asyncio.sleep(0)  # every task has queued its event; none is sent yet
        tasks[3].cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(outcomes[3], asyncio.CancelledError)
        assert await hub.publish("t", "later")
    assert [d for _, _, d in stream_entries(redis_url, key_prefix, "t")] == [
        *(str(n) for n in range(10) if n != 3),
        "later",
    ]


async def test_an_event_redis_refuses_fails_alone(redis_url: str, key_prefix: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.set(Keys(key_prefix).stream("broken"), "not a stream")
    events = [("t", "a"), ("broken", "b"), ("t", "c")]
    async with publisher(redis_url, key_prefix) as hub:
        with pytest.raises(NotAllPublished) as caught:
            await hub.publish_many(events)
        # Single publishes in the same pipeline as a failing one get their own outcome.
        alone = await asyncio.gather(
            hub.publish("t", "d"), hub.publish("broken", "e"), return_exceptions=True
        )
    results = caught.value.results
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    assert "1 of 3 events were not published" in str(caught.value)
    assert isinstance(alone[1], ResponseError)
    held = stream_entries(redis_url, key_prefix, "t")
    assert [i for i, _, _ in held] == [results[0], results[2], alone[0]]
    assert [d for _, _, d in held] == ["a", "c", "d"]


async def test_an_emptied_script_cache_is_filled_again_in_order(
    private_redis: RedisServers, key_prefix: str
) -> None:
    server = private_redis()
    async with publisher(server.url, key_prefix) as hub:
        await hub.publish("a", "before")
        with redis.Redis.from_url(server.url) as admin:
            admin.script_flush()
        # Every EVALSHA of this pipeline answers NOSCRIPT: they go again, in order.
        ids = await hub.publish_many([(("a", "b")[n % 2], str(n)) for n in range(200)])
        assert await hub.publish("b", "after")
    assert [d for _, _, d in stream_entries(server.url, key_prefix, "a")][1:] == [
        str(n) for n in range(0, 200, 2)
    ]
    held_b = stream_entries(server.url, key_prefix, "b")
    assert [d for _, _, d in held_b] == [*(str(n) for n in range(1, 200, 2)), "after"]
    assert [i for i, _, _ in held_b][:-1] == ids[1::2]


async def test_an_unreachable_redis_fails_every_event_without_an_id(key_prefix: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    started = time.monotonic()
    async with publisher(url, key_prefix, redis_timeout_seconds=0.5) as hub:
        with pytest.raises(NotAllPublished) as caught:
            await hub.publish_many([("t", str(n)) for n in range(1_500)])
        with pytest.raises(RedisConnectionError):
            await hub.publish("t", "x")
    results = caught.value.results
    assert all(isinstance(r, RedisConnectionError) for r in results)
    # The first waited for Redis until the deadline; the others were not sent.
    assert all(isinstance(r, NotSent) for r in results[1:])
    assert time.monotonic() - started < 10


@contextlib.asynccontextmanager
async def dropping_server(accepted: list[int]) -> AsyncIterator[str]:
    """A Redis URL whose server closes each connection once it has received anything."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    try:
        yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_events_sent_on_a_connection_that_is_lost_are_never_sent_again(
    key_prefix: str,
) -> None:
    accepted: list[int] = []
    async with dropping_server(accepted) as url, publisher(url, key_prefix) as hub:
        with pytest.raises(NotAllPublished) as caught:
            await hub.publish_many([("t", str(n)) for n in range(5)])
    assert all(isinstance(r, RedisConnectionError) for r in caught.value.results)
    assert len(accepted) == 1, "they may have been written: a second send could double them"


async def test_events_that_no_replica_confirms_are_written_but_not_acknowledged(
    redis_url: str, key_prefix: str
) -> None:
    async with publisher(redis_url, key_prefix, publish_wait_replicas=1, publish_wait_ms=50) as hub:
        with pytest.raises(NotAllPublished) as caught:
            await hub.publish_many([("t", "a"), ("t", "b")])
        with pytest.raises(NotReplicated):
            await hub.publish("t", "c")
    results = caught.value.results
    assert all(isinstance(r, NotReplicated) for r in results)
    held = stream_entries(redis_url, key_prefix, "t")
    assert [d for _, _, d in held] == ["a", "b", "c"]
    assert [r.event_id for r in results if isinstance(r, NotReplicated)] == [
        i for i, _, _ in held[:2]
    ]


def test_the_packed_command_is_the_command() -> None:
    for settings in (Settings(), Settings(key_prefix="p:", retention_seconds=60)):
        writer = EventWriter(
            settings, Primaries(topology.from_url("redis://127.0.0.1:9", 1.0), 1, 1.0)
        )
        for event in (("news", "héllo\r\nwörld", "t"), ("a/b", "", ""), ("x", "😀" * 9, "")):
            call = writer.prepare(*event)
            assert call.packed == pack(call.command)


def token(publish: list[str]) -> str:
    claims = {"mercure": {"publish": publish}, "exp": int(time.time() + 600)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_http_publish_many_publishes_in_order_over_several_requests(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": "tok"})
    events = [(f"h/{n % 3}", f"event {n}", "x" if n % 5 == 0 else "") for n in range(1_200)]
    with HttpPublisher(hub.url, "tok") as http:
        ids = http.publish_many(events)  # 500 events a request at most: three requests
    for topic in ("h/0", "h/1", "h/2"):
        sent = [(i, e) for i, e in zip(ids, events, strict=True) if e[0] == topic]
        assert stream_entries(redis_url, key_prefix, topic) == [(i, e[2], e[1]) for i, e in sent]


def test_http_publish_many_names_the_first_refused_event_after_publishing_the_others(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_JWT_KEY": SECRET})
    events = [("mine/a", "1"), ("theirs", "2"), ("mine/b", "3"), ("theirs", "4"), ("mine/a", "5")]
    with (
        HttpPublisher(hub.url, token(["mine/*"])) as http,
        pytest.raises(PublishRefused) as caught,
    ):
        http.publish_many(events)
    message = str(caught.value)
    assert "refused 2 of 5 events" in message and "event 1: 403" in message
    assert "theirs" in message
    ids = caught.value.ids
    assert [i is None for i in ids] == [False, True, False, True, False]
    assert stream_entries(redis_url, key_prefix, "mine/a") == [(ids[0], "", "1"), (ids[4], "", "5")]
    assert stream_entries(redis_url, key_prefix, "theirs") == []
