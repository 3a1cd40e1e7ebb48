"""The gateway as its users see it: real gateway processes, a real Redis, an independent
SSE client."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time

import httpx
import pytest
import redis
from processes import Gateways, RedisServers, wait_until_async
from sse_client import Listener, count_events, listening, metric, publisher

from hub.config import Settings
from hub.topics import Keys

pytestmark = pytest.mark.anyio


async def test_every_client_gets_every_event_in_order(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway()
    async with (
        listening(hub.url, ["news"], count=40) as clients,
        publisher(redis_url, key_prefix) as pub,
    ):
        ids = [await pub.publish("news", f"event {n}") for n in range(100)]
        for client in clients:
            await client.wait_for(100)
        for client in clients:
            assert client.data == [f"event {n}" for n in range(100)]
            assert [event.id for event in client.events] == ids


async def test_a_frame_carries_type_and_multiline_data(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway()
    async with listening(hub.url, ["build"]) as [client], publisher(redis_url, key_prefix) as pub:
        await pub.publish("build", "line one\r\nline two\nGrüße 🎉", "log")
        await client.wait_for(1, any_type=True)
    assert client.events[0].event == "log"
    assert client.events[0].data == "line one\nline two\nGrüße 🎉"


async def test_stream_headers_follow_the_spec(gateway: Gateways) -> None:
    hub = gateway()
    async with listening(hub.url, ["news"]) as [client]:
        assert client.headers is not None
        assert client.headers["content-type"].startswith("text/event-stream")
        assert client.headers["cache-control"] == "no-cache"
        assert client.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in client.headers


@pytest.mark.parametrize("use_query", [False, True], ids=["header", "query"])
async def test_resume_replays_exactly_what_was_missed(
    gateway: Gateways, redis_url: str, key_prefix: str, use_query: bool
) -> None:
    hub = gateway()
    async with publisher(redis_url, key_prefix) as pub:
        async with listening(hub.url, ["news"]) as [client]:
            for n in range(10):
                await pub.publish("news", str(n))
            await client.wait_for(10)
        for n in range(10, 25):
            await pub.publish("news", str(n))
        resumed = Listener(hub.url, ["news"], client.cursor, use_query=use_query).start()
        await resumed.wait_for(15)
        await pub.publish("news", "live")
        await pub.publish("news", "end")  # anything repeated would come before it
        await resumed.wait_for(17)
        await resumed.close()
    assert client.data == [str(n) for n in range(10)]
    assert resumed.data == [str(n) for n in range(10, 25)] + ["live", "end"]
    assert resumed.headers is not None and "hub-replay-truncated" not in resumed.headers


async def test_resume_on_another_gateway_with_several_topics(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    first, second = gateway.many(2)
    topics = ["alpha", "beta", "gamma"]
    async with publisher(redis_url, key_prefix) as pub:
        async with listening(first.url, topics) as [client]:
            await pub.publish("alpha", "a0")
            await pub.publish("gamma", "g0")
            await client.wait_for(2)
        for n in range(1, 4):
            await pub.publish("alpha", f"a{n}")
            await pub.publish("beta", f"b{n}")
        resumed = Listener(second.url, topics, client.cursor).start()
        await resumed.wait_for(6)
        await pub.publish("gamma", "g1")
        await resumed.wait_for(7)
        await resumed.close()
    assert client.data == ["a0", "g0"]
    assert sorted(resumed.data) == sorted(["a1", "a2", "a3", "b1", "b2", "b3", "g1"])
    assert [d for d in resumed.data if d[0] == "a"] == ["a1", "a2", "a3"]
    assert len(resumed.events[-1].id) < 40, "a composite cursor stays short"


async def test_a_topic_with_no_events_yet_is_resumed_from_where_the_client_joined(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway()
    async with publisher(redis_url, key_prefix) as pub:
        async with listening(hub.url, ["quiet", "busy"]) as [client]:
            await pub.publish("busy", "b0")
            await client.wait_for(1)
        await pub.publish("quiet", "q-missed")
        resumed = Listener(hub.url, ["quiet", "busy"], client.cursor).start()
        await resumed.wait_for(1)
        await resumed.close()
    assert resumed.data == ["q-missed"]


async def test_a_cursor_older_than_the_history_is_told_so(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway()
    async with publisher(redis_url, key_prefix, retention_maxlen=100) as pub:
        first = await pub.publish("news", "first")
        for n in range(1000):
            await pub.publish("news", str(n))
    resumed = Listener(hub.url, ["news"], first).start()
    await wait_until_async(
        lambda: resumed.data[-1:] == ["999"],
        20,
        "the replay to reach the last event, 999",
        observe=lambda: f"{len(resumed.data)} events, the last {resumed.data[-1:]}",
    )
    await resumed.close()
    assert resumed.headers is not None and resumed.headers["hub-replay-truncated"] == "news"
    assert resumed.events[0].event == "stream-reset"
    replayed = [int(d) for d in resumed.data]
    assert replayed == list(range(replayed[0], 1000)), "what is left arrives whole and in order"
    assert 100 <= len(replayed) < 1000


async def test_resume_far_back_in_a_long_history(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    total = 40_000
    client = redis.Redis.from_url(redis_url)
    stream = Keys(key_prefix).stream("deep")
    async with publisher(redis_url, key_prefix, retention_maxlen=100_000) as pub:
        ids = [await pub.publish("deep", "0")]
        # The bulk is written with the same script and arguments through a pipeline, for speed.
        from hub.publish import PUBLISH_SCRIPT, script_call

        script = client.register_script(PUBLISH_SCRIPT)
        settings = Settings(key_prefix=key_prefix, retention_maxlen=100_000)
        for start in range(1, total, 2000):
            with client.pipeline(transaction=False) as pipe:
                for n in range(start, min(start + 2000, total)):
                    key, args = script_call(settings, "deep", str(n), "")
                    script(keys=[key], args=args, client=pipe)
                ids += [i.decode() for i in pipe.execute()]
    assert client.xlen(stream) == total
    hub = gateway({"HUB_REPLAY_PAGE": "500"})
    for start in (0, total // 2):
        resumed = Listener(hub.url, ["deep"], ids[start]).start()
        await resumed.wait_for(total - start - 1, within=120)
        await resumed.close()
        assert resumed.data == [str(n) for n in range(start + 1, total)]
        assert [e.id for e in resumed.events] == ids[start + 1 :]


async def test_clients_that_disconnect_and_resume_under_load_miss_nothing(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    """Clients drop and resume, each time on a random one of two gateways, while events are
    published steadily; each must get every event once, in order.

    A client reconnects at once with the last ID it saw. Most connections are held for a
    random moment (5-150 ms) after the gateway answered, so they end during the replay of
    what was missed, between live events, or while one is written; some are dropped
    before any answer. Publishing goes on until every client has resumed at least
    `CHURNS` times meanwhile, so a slow machine makes the test longer, never weaker; the
    wait ends when each client has the last event, or fails when none has received
    anything for 30 s, saying what each one got.
    """
    CHURNS = 10
    gateways = gateway.many(2)
    clients = 6
    seen: list[list[str]] = [[] for _ in range(clients)]
    resumes = [0] * clients
    published: list[str] = []
    finished = asyncio.Event()

    async def churn(index: int, cursor: str) -> None:
        rng = random.Random(index)
        while not finished.is_set() or not seen[index] or seen[index][-1] != published[-1]:
            listener = Listener(rng.choice(gateways).url, ["race"], cursor).start()
            if rng.random() < 0.8:
                await listener.wait_connected()
                await asyncio.sleep(rng.uniform(0.005, 0.15))  # the moment of the disconnect
            await listener.close()
            seen[index] += listener.data
            cursor = listener.cursor
            if not finished.is_set():
                resumes[index] += 1

    async with publisher(redis_url, key_prefix) as pub:
        start = await pub.publish("race", "start")
        tasks = [asyncio.create_task(churn(i, start)) for i in range(clients)]
        n = 0
        while n < 200 or min(resumes) < CHURNS:  # 200 events/s at most
            await pub.publish("race", str(n))
            published.append(str(n))
            n += 1
            await asyncio.sleep(0.005)
            if any(task.done() for task in tasks):
                break  # one failed: its error is raised below
    finished.set()

    def report() -> str:
        return "; ".join(
            f"client {i}: {count_events(published, seen[i])}, {resumes[i]} resumes"
            for i in range(clients)
        )

    await wait_until_async(
        lambda: all(task.done() for task in tasks),
        30,
        "every client to get the last event",
        observe=report,
        progress=lambda: sum(len(events) for events in seen),
    )
    for task in tasks:
        task.result()
    for index in range(clients):
        tally = count_events(published, seen[index])
        assert tally.ok and tally.lost == 0, f"client {index} ({resumes[index]} resumes): {tally}"
    assert min(resumes) >= CHURNS, report()


async def connected_clients(http: httpx.AsyncClient, count: int) -> bool:
    """Whether the gateway has at least `count` streams attached."""
    return metric((await http.get("/metrics")).text, "hub_connected_clients") >= count


async def test_a_slow_client_is_dropped_while_fast_ones_keep_receiving(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_CLIENT_BUFFER_BYTES": "262144"})
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", hub.port))
    slow.sendall(b"GET /events?topic=flood HTTP/1.1\r\nHost: test\r\n\r\n")
    payload = "x" * 10_000
    async with (
        listening(hub.url, ["flood"], count=3) as fast,
        publisher(redis_url, key_prefix) as pub,
    ):
        async with httpx.AsyncClient(base_url=hub.url) as http:
            await wait_until_async(
                lambda: connected_clients(http, 4),
                10,
                "the slow client and the 3 fast ones attached",
            )
        for n in range(600):  # 2 MB/s: easy for a reader, too much for one that never reads
            await pub.publish("flood", f"{n} {payload}")
            if n % 4 == 0:
                await asyncio.sleep(0.02)
        await asyncio.gather(*(client.wait_for(600, within=60) for client in fast))
    for client in fast:
        assert [d.split()[0] for d in client.data] == [str(n) for n in range(600)]
    await wait_until_async(
        lambda: "slow client dropped" in hub.log_text(),
        20,
        "the gateway to drop the slow client",
        observe=hub.log_tail,
    )
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    slow.settimeout(20)
    received = 0
    with slow, contextlib.suppress(ConnectionResetError):  # the gateway resets what it drops
        while chunk := slow.recv(1 << 20):  # the gateway closed it: reading ends, not hangs
            received += len(chunk)
    assert received < 600 * 10_000
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{hub.url}/healthz")).status_code == 200


async def test_a_disconnect_frees_the_subscription(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway()
    channel = Keys(key_prefix).channel("lonely")
    server = redis.Redis.from_url(redis_url)

    def subscribers() -> int:
        return int(dict(server.pubsub_numsub(channel))[channel.encode()])

    async with listening(hub.url, ["lonely"], count=3):
        assert subscribers() == 1, "one subscription per process, however many clients"
    await wait_until_async(
        lambda: subscribers() == 0,
        10,
        f"the last client's disconnect to unsubscribe {channel}",
        observe=lambda: f"{subscribers()} subscribers",
    )


async def test_sigterm_ends_every_stream_and_exits_promptly(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_SHUTDOWN_SECONDS": "5"})
    clients = [Listener(hub.url, ["news"]).start() for _ in range(10)]
    for client in clients:
        await client.wait_connected()
    async with publisher(redis_url, key_prefix) as pub:
        await pub.publish("news", "before")
    for client in clients:
        await client.wait_for(1)
    started = time.monotonic()
    hub.process.terminate()
    for client in clients:
        await client.wait_ended(within=10)
        assert client.ended and client.data == ["before"]
    code = await asyncio.to_thread(hub.wait, 10)
    assert code == 0
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("path", "headers", "status", "reason"),
    [
        ("/events", {}, 400, "name at least one topic"),
        ("/events?topic=", {}, 400, "topic is empty"),
        ("/events?topic=a%20b", {}, 400, "contains ' '"),
        ("/events?topic=" + "x" * 1100, {}, 400, "longer than 1024"),
        ("/events?" + "&".join(f"topic=t{n}" for n in range(40)), {}, 400, "over the limit"),
        ("/events?topic=a", {"Last-Event-ID": "banana"}, 400, "not a stream ID"),
        ("/events?topic=a&last_event_id=1-2-3", {}, 400, "not a stream ID"),
        ("/events?topic=a&topic=b", {"Last-Event-ID": "1700000000000-0"}, 400, "position for each"),
    ],
)
async def test_bad_stream_requests_get_a_reason(
    gateway: Gateways, path: str, headers: dict[str, str], status: int, reason: str
) -> None:
    hub = gateway()
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.get(path, headers=headers)
        assert response.status_code == status
        assert reason in response.text
        assert "Traceback" not in response.text
        assert (await http.get("/healthz")).status_code == 200


async def test_readiness_and_the_page(gateway: Gateways) -> None:
    hub = gateway()
    async with httpx.AsyncClient(base_url=hub.url) as http:
        assert (await http.get("/readyz")).status_code == 200
        page = await http.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert (await http.post("/events?topic=a")).status_code == 405


async def test_cors_allows_only_the_configured_origins(gateway: Gateways) -> None:
    hub = gateway({"HUB_CORS_ORIGINS": "http://front.test:3000"})
    async with httpx.AsyncClient(base_url=hub.url) as http:
        preflight = await http.options(
            "/publish",
            headers={
                "Origin": "http://front.test:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == "http://front.test:3000"
        async with http.stream(
            "GET", "/events?topic=a", headers={"Origin": "http://front.test:3000"}
        ) as stream:
            assert stream.headers["access-control-allow-origin"] == "http://front.test:3000"
        async with http.stream(
            "GET", "/events?topic=a", headers={"Origin": "http://evil.test"}
        ) as stream:
            assert "access-control-allow-origin" not in stream.headers


async def test_a_silent_subscription_is_noticed_and_replaced(
    gateway: Gateways, private_redis: RedisServers, key_prefix: str
) -> None:
    """Redis stops answering without closing the socket (a frozen host): PING finds out."""
    server = private_redis()
    hub = gateway({"HUB_REDIS_TIMEOUT_SECONDS": "1"}, redis_url=server.url)
    async with listening(hub.url, ["news"]) as [client]:
        server.freeze()
        try:
            await wait_until_async(
                lambda: "redis subscription silent" in hub.log_text(),
                15,
                "the gateway to notice that Redis stopped answering",
                observe=hub.log_tail,
            )
        finally:
            server.thaw()
        async with publisher(server.url, key_prefix) as pub:
            await pub.publish("news", "after the freeze")
        await client.wait_for(1)
    assert client.data == ["after the freeze"]
