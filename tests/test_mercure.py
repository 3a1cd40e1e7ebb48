"""The Mercure protocol, against real gateway processes on a real Redis.

Each rule of the spec (draft-dunglas-mercure-08) and of its older dialect that
the hub implements: matchers, publishing, private updates, resuming from any
update's ID on any gateway, the answers to bad requests, and tokens in each of
the places a client may put them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
import redis.asyncio
from processes import Gateway, Gateways, RedisServers, wait_until_async
from sse_client import Listener, Received, ReconnectingListener, connected

from hub.mercure.record import partition_topic
from hub.topics import Keys

pytestmark = pytest.mark.anyio
SECRET = "a-test-secret-of-at-least-32-bytes!"
HUB = "https://hub.example/"
ENV = {"HUB_JWT_KEY": SECRET, "HUB_PUBLIC_URL": HUB, "HUB_RETRY_MS": "300"}
MERCURE = "/.well-known/mercure"
BOOKS = "https://example.com/books/"


def legacy_token(subscribe: Sequence[str] = (), publish: Sequence[str] = (), **claims: Any) -> str:
    """A token in the older dialect: a `mercure` claim of topic selectors."""
    body = {"mercure": {"subscribe": list(subscribe), "publish": list(publish)}, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


def token(
    subscribe: Sequence[dict[str, str]] = (),
    publish: Sequence[dict[str, str]] = (),
    ttl: float = 600,
    **claims: Any,
) -> str:
    """A token in the current form: `authorization_details`, `typ: at+jwt`, `exp`."""
    details = []
    for action, topics in (("subscribe", subscribe), ("publish", publish)):
        if topics:
            details.append({"type": "mercure", "actions": [action], "topics": list(topics)})
    body = {"authorization_details": details, "exp": int(time.time() + ttl), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})


PUBLISHER = legacy_token(publish=["*"])


async def publish(
    url: str,
    topics: str | Sequence[str],
    data: str = "",
    *,
    bearer: str = PUBLISHER,
    expect: int = 200,
    extra: Sequence[tuple[str, str]] = (),
    **fields: str,
) -> str:
    """POST an update, form-encoded as Mercure publishers do; its ID (or the refusal's text)."""
    named = [topics] if isinstance(topics, str) else topics
    form = [*(("topic", topic) for topic in named), ("data", data), *fields.items(), *extra]
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            MERCURE,
            content=urlencode(form),
            headers={
                "Authorization": f"Bearer {bearer}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
    assert response.status_code == expect, response.text
    if expect == 200:
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
    return response.text


def subscriber(
    url: str, query: Sequence[tuple[str, str]], last_event_id: str = "", **options: Any
) -> Listener:
    return Listener(url, [], last_event_id, path=MERCURE, query=list(query), **options).start()


async def subscribed(
    url: str, query: Sequence[tuple[str, str]], last_event_id: str = "", **options: Any
) -> Listener:
    listener = subscriber(url, query, last_event_id, **options)
    await listener.wait_connected()
    assert listener.status == 200
    return listener


async def received(listener: Listener, count: int, within: float = 20.0) -> list[Received]:
    await listener.wait_for(count, within, any_type=True)
    await asyncio.sleep(0.3)  # and nothing more than that
    return listener.events


def datas(events: Sequence[Received]) -> list[str]:
    return [event.data for event in events]


async def refusal(
    url: str, query: Sequence[tuple[str, str]], headers: dict[str, str] | None = None
) -> tuple[int, str, httpx.Headers]:
    async with httpx.AsyncClient(base_url=url) as http:
        async with http.stream("GET", MERCURE, params=list(query), headers=headers or {}) as r:
            if r.status_code == 200:
                return 200, "", r.headers
            await r.aread()
            return r.status_code, r.text, r.headers


# -- subscribing and publishing ------------------------------------------------------------


async def test_an_update_reaches_its_subscriber_with_its_id_type_and_retry(
    gateway: Gateways,
) -> None:
    hub = gateway(ENV)
    listener = await subscribed(hub.url, [("match", BOOKS + "1")])
    first = await publish(hub.url, BOOKS + "1", "hello", type="book.updated", retry="1500")
    assert first.startswith("#"), "the hub names updates with a fragment, as the spec allows"
    mine = await publish(hub.url, BOOKS + "1", "line one\nline two", id="urn:uuid:1234")
    assert mine == "urn:uuid:1234", "a publisher's own ID is the update's ID"
    events = await received(listener, 2)
    assert [(e.id, e.event, e.data) for e in events] == [
        (first, "book.updated", "hello"),
        ("urn:uuid:1234", "message", "line one\nline two"),
    ]
    await listener.close()


async def test_each_matcher_type_selects_its_topics(gateway: Gateways) -> None:
    hub = gateway(ENV)
    exact = await subscribed(hub.url, [("match", BOOKS + "1")])
    explicit = await subscribed(hub.url, [("matchExact", BOOKS + "2")])
    pattern = await subscribed(hub.url, [("matchURLPattern", BOOKS + ":id")])
    template = await subscribed(hub.url, [("topic", BOOKS + "{id}")])
    everything = await subscribed(hub.url, [("match", "*")])
    legacy_all = await subscribed(hub.url, [("topic", "*")])
    relative = await subscribed(hub.url, [("matchURLPattern", "/books/:id")])
    topics = [BOOKS + "1", BOOKS + "2", "https://example.com/authors/1", HUB + "books/7"]
    for n, topic in enumerate(topics):
        await publish(hub.url, topic, f"{n}")
    assert datas(await received(exact, 1)) == ["0"]
    assert datas(await received(explicit, 1)) == ["1"]
    assert datas(await received(pattern, 2)) == ["0", "1"]
    assert datas(await received(template, 2)) == ["0", "1"]
    assert datas(await received(everything, 4)) == ["0", "1", "2", "3"]
    assert datas(await received(legacy_all, 4)) == ["0", "1", "2", "3"]
    assert datas(await received(relative, 1)) == ["3"], "relative patterns resolve on the hub's URL"


async def test_an_update_goes_to_subscribers_of_any_of_its_topics(gateway: Gateways) -> None:
    hub = gateway(ENV)
    canonical = await subscribed(hub.url, [("match", BOOKS + "1")])
    alternate = await subscribed(hub.url, [("match", BOOKS + "1.jsonld")])
    both = await subscribed(hub.url, [("match", BOOKS + "1"), ("match", BOOKS + "1.jsonld")])
    await publish(hub.url, [BOOKS + "1", BOOKS + "1.jsonld"], "once")
    for listener in (canonical, alternate, both):
        assert datas(await received(listener, 1)) == ["once"], "once, even to a subscriber of both"


async def test_iris_with_queries_and_braces_are_topics(gateway: Gateways) -> None:
    hub = gateway(ENV)
    topics = ["https://example.com/books/1?lang=fr", "urn:x:{weird}%25", "café/☕"]
    listeners = [await subscribed(hub.url, [("match", topic)]) for topic in topics]
    for topic in topics:
        await publish(hub.url, topic, topic)
    for listener, topic in zip(listeners, topics, strict=True):
        assert datas(await received(listener, 1)) == [topic]


# -- private updates -------------------------------------------------------------------------


async def test_private_updates_reach_only_tokens_that_cover_them_live_and_on_replay(
    gateway: Gateways,
) -> None:
    hub = gateway(ENV)
    query = [("matchURLPattern", BOOKS + ":id")]
    reader = token([{"match": BOOKS + "1"}])
    anonymous = await subscribed(hub.url, query)
    covered = await subscribed(
        hub.url, query, request_headers={"Authorization": f"Bearer {reader}"}
    )
    start = await publish(hub.url, BOOKS + "0", "public 0")
    private_one = await publish(hub.url, BOOKS + "1", "private 1", private="on")
    await publish(hub.url, BOOKS + "2", "private 2", private="")
    await publish(hub.url, BOOKS + "3", "public 3")
    assert datas(await received(anonymous, 2)) == ["public 0", "public 3"]
    assert datas(await received(covered, 3)) == ["public 0", "private 1", "public 3"]
    # The same rules when the updates are replayed, on a second gateway.
    other = gateway(ENV)
    replayed = await subscribed(
        other.url, query, start, request_headers={"Authorization": f"Bearer {reader}"}
    )
    assert datas(await received(replayed, 2)) == ["private 1", "public 3"]
    anonymous_replay = await subscribed(other.url, query, start)
    assert datas(await received(anonymous_replay, 1)) == ["public 3"]
    # Resuming from a private update: the response names it only to those who may read it.
    for bearer, echoed in ((None, "earliest"), (reader, private_one)):
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        resumed = await subscribed(other.url, query, private_one, request_headers=headers)
        assert resumed.headers is not None and resumed.headers["last-event-id"] == echoed
        assert datas(await received(resumed, 1)) == ["public 3"]


async def test_a_token_is_read_from_the_header_the_query_or_the_cookie(gateway: Gateways) -> None:
    hub = gateway(ENV)
    query = [("match", BOOKS + "9")]
    current = token([{"match": BOOKS + "9"}])
    older = legacy_token([BOOKS + "{id}"])
    listeners = [
        await subscribed(hub.url, query, request_headers={"Authorization": f"Bearer {current}"}),
        await subscribed(hub.url, [*query, ("access_token", current)]),
        await subscribed(hub.url, [*query, ("authorization", older)]),
        await subscribed(hub.url, query, cookies={"mercureAccessToken": current}),
        await subscribed(hub.url, query, cookies={"mercureAuthorization": older}),
    ]
    await publish(hub.url, BOOKS + "9", "secret", private="on")
    for listener in listeners:
        assert datas(await received(listener, 1)) == ["secret"]


# -- resuming --------------------------------------------------------------------------------


async def test_any_update_id_resumes_exactly_on_another_gateway(gateway: Gateways) -> None:
    first, second = gateway(ENV), gateway(ENV)
    query = [("matchURLPattern", BOOKS + ":id")]
    ids = []
    for n in range(40):  # forty topics: spread over the partitions
        own = [("id", f"urn:book-{n}")] if n % 3 == 0 else []
        ids.append(await publish(first.url, f"{BOOKS}{n}", f"{n}", extra=own))
    for cut in (0, 7, 9, 21, 38):
        listener = await subscribed(second.url, query, ids[cut])
        assert listener.headers is not None and listener.headers["last-event-id"] == ids[cut]
        assert datas(await received(listener, 39 - cut)) == [str(n) for n in range(cut + 1, 40)]
        assert [e.id for e in listener.events] == ids[cut + 1 :]
        await listener.close()
    via_query = await subscribed(second.url, [*query, ("lastEventID", ids[30])])
    assert datas(await received(via_query, 9)) == [str(n) for n in range(31, 40)]
    earliest = await subscribed(second.url, query, "earliest")
    assert datas(await received(earliest, 40)) == [str(n) for n in range(40)]
    unknown = await subscribed(second.url, query, "urn:never-published")
    assert unknown.headers is not None and unknown.headers["last-event-id"] == "earliest"


async def test_every_gateway_delivers_updates_in_the_same_order(gateway: Gateways) -> None:
    gateways = [gateway(ENV), gateway(ENV)]
    query = [("match", "*")]
    listeners = [await subscribed(g.url, query) for g in gateways]

    async def burst(offset: int, via: Gateway) -> None:
        for n in range(50):
            await publish(via.url, f"{BOOKS}{(offset + n) % 23}", f"{offset + n}")

    await asyncio.gather(*(burst(1000 * k, gateways[k % 2]) for k in range(4)))
    first, second = [await received(listener, 200) for listener in listeners]
    assert len(first) == 200 and [e.id for e in first] == [e.id for e in second]
    # The order is one every resume agrees with: from any ID, the rest, exactly.
    cut = first[120].id
    resumed = await subscribed(gateways[1].url, query, cut)
    assert [e.id for e in await received(resumed, 79)] == [e.id for e in first[121:]]


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ([], "at least one"),
        ([("matchFoo", "x")], "match"),
        ([("MATCHexact", "x")], "match"),
        ([("match", "a\x01b")], "control"),
        ([("match", "x" * 2000)], ""),
        ([("match", f"t{n}") for n in range(40)], ""),
    ],
)
async def test_bad_subscriptions_are_refused_with_400(
    gateway: Gateways, query: list[tuple[str, str]], reason: str
) -> None:
    hub = gateway(ENV)
    status, text, _ = await refusal(hub.url, query)
    assert status == 400 and reason in text.lower(), text


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([("data", "x")], 400),  # no topic
        ([("topic", "*")], 400),
        ([("topic", "a\x7fb")], 400),
        ([("topic", "/.well-known/mercure/subscriptions/x")], 403),
        ([("topic", HUB + ".well-known/mercure/x")], 403),
        ([("topic", "t"), ("id", "#mine")], 400),
        ([("topic", "t"), ("id", "a\nb")], 400),
        ([("topic", "t"), ("type", "a\rb")], 400),
        ([("topic", "t"), ("type", "mercure")], 400),
        ([("topic", "t"), ("retry", "1.5")], 400),
        ([("topic", "t"), ("retry", "-1")], 400),
        ([("topic", "t"), ("id", "x" * 5000)], 413),
        ([("topic", "x" * 5000)], 413),
        ([("topic", "t"), ("data", "x" * 2_000_000)], 413),
    ],
)
async def test_bad_updates_are_refused_as_the_spec_says(
    gateway: Gateways, fields: list[tuple[str, str]], status: int
) -> None:
    hub = gateway(ENV)
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post(
            MERCURE,
            content=urlencode(fields),
            headers={
                "Authorization": f"Bearer {PUBLISHER}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
    assert response.status_code == status, response.text
    assert response.text.strip() and "Traceback" not in response.text


async def test_publishing_needs_a_token_that_covers_every_topic(gateway: Gateways) -> None:
    hub = gateway(ENV)
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post(MERCURE, data={"topic": "t", "data": "x"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            f'Bearer resource_metadata="{HUB}.well-known/oauth-protected-resource/.well-known/mercure"'
        ), "no token: a challenge without an error, naming the hub's metadata"
        response = await http.post(
            MERCURE, data={"topic": "t"}, headers={"Authorization": "Bearer not-a-jwt"}
        )
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    narrow = token(publish=[{"match": BOOKS + ":id", "matchType": "URLPattern"}])
    await publish(hub.url, BOOKS + "1", "ok", bearer=narrow)
    await publish(hub.url, "https://example.com/authors/1", "no", bearer=narrow, expect=403)
    await publish(hub.url, [BOOKS + "1", "other"], "no", bearer=narrow, expect=403)
    expired = token(publish=[{"match": "*"}], ttl=-10)
    await publish(hub.url, BOOKS + "1", "no", bearer=expired, expect=401)
    unsigned = jwt.encode({"mercure": {"publish": ["*"]}}, "another-secret-of-32-bytes-or-more!")
    await publish(hub.url, BOOKS + "1", "no", bearer=unsigned, expect=401)


async def test_a_token_in_a_cookie_publishes_only_from_an_allowed_origin(
    gateway: Gateways,
) -> None:
    """A cookie goes along with any site's form: the hub checks where the request came from."""
    hub = gateway({**ENV, "HUB_CORS_ORIGINS": "https://app.example"})
    cookies = {"mercureAuthorization": PUBLISHER}
    async with httpx.AsyncClient(base_url=hub.url, cookies=cookies) as http:
        for origin, status in (
            ("https://evil.example", 403),
            (None, 403),
            ("https://app.example", 200),
            (HUB.rstrip("/"), 200),
        ):
            headers = {"Origin": origin} if origin else {}
            response = await http.post(MERCURE, data={"topic": "t"}, headers=headers)
            assert response.status_code == status, (origin, response.text)


async def test_subscribers_need_a_token_when_anonymous_access_is_off(gateway: Gateways) -> None:
    hub = gateway({**ENV, "HUB_MERCURE_ANONYMOUS": "off"})
    status, _, headers = await refusal(hub.url, [("match", "t")])
    assert status == 401 and "error" not in headers["www-authenticate"]
    status, _, headers = await refusal(
        hub.url, [("match", "t")], {"Authorization": "Bearer nonsense"}
    )
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    reader = token([{"match": "t"}])
    status, _, _ = await refusal(hub.url, [("match", "t")], {"Authorization": f"Bearer {reader}"})
    assert status == 200


async def test_the_hub_serves_its_protected_resource_metadata(gateway: Gateways) -> None:
    hub = gateway({**ENV, "HUB_JWT_AUDIENCE": "https://hub.example/.well-known/mercure"})
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.get("/.well-known/oauth-protected-resource" + MERCURE)
    assert response.json() == {
        "resource": "https://hub.example/.well-known/mercure",
        "bearer_methods_supported": ["header", "query"],
        "mercure_cookie": True,
        "mercure_version": 8,
    }


async def test_a_stream_ends_when_its_token_expires(gateway: Gateways) -> None:
    hub = gateway(ENV)
    short = token([{"match": "*"}], ttl=5)
    listener = await subscribed(
        hub.url, [("match", "t")], request_headers={"Authorization": f"Bearer {short}"}
    )
    await listener.wait_ended(within=20)


async def test_the_native_api_is_unchanged_beside_mercure(gateway: Gateways) -> None:
    hub = gateway(ENV)
    listener = Listener(hub.url, ["news"]).start()
    await listener.wait_connected()
    mercure = await subscribed(hub.url, [("match", "*")])
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post(
            "/publish",
            json={"topic": "news", "data": "native"},
            headers={"Authorization": f"Bearer {legacy_token(publish=['*'])}"},
        )
        assert response.status_code == 200, response.text
    await publish(hub.url, "news", "mercure")
    await listener.wait_for(1)
    assert listener.data == ["native"], "the two faces keep their own records"
    assert datas(await received(mercure, 1)) == ["mercure"]
    status, _, _ = await refusal(hub.url, [])
    assert status == 400
    async with httpx.AsyncClient(base_url=hub.url) as http:
        partition = await http.get("/events", params={"topic": "mercure 0"})
        assert partition.status_code == 400, "a partition is no topic a client can name"


# -- faults ----------------------------------------------------------------------------------


async def test_a_redis_restart_loses_and_repeats_no_update(
    gateway: Gateways, private_redis: RedisServers
) -> None:
    """Updates acknowledged before, during (refused ones aside) and after a restart of a
    persistent Redis reach a URL-pattern subscriber once each, in order, and a subscriber
    that resumes from the first update's ID on another gateway gets the same sequence."""
    server = private_redis(persistent=True)
    first, second = gateway(ENV, redis_url=server.url), gateway(ENV, redis_url=server.url)
    query = [("matchURLPattern", BOOKS + ":id")]
    client = ReconnectingListener(first.url, [], path=MERCURE, query=query).start()
    await connected([client])
    acknowledged: list[tuple[str, str]] = []
    refused = 0

    async def publish_some(count: int, offset: int) -> None:
        nonlocal refused
        async with httpx.AsyncClient(base_url=first.url, timeout=20.0) as http:
            for n in range(offset, offset + count):
                response = await http.post(
                    MERCURE,
                    data={"topic": f"{BOOKS}{n % 11}", "data": f"u{n}"},
                    headers={"Authorization": f"Bearer {PUBLISHER}"},
                )
                if response.status_code == 200:
                    acknowledged.append((response.text, f"u{n}"))
                else:
                    refused += 1
                await asyncio.sleep(0.01)

    await publish_some(40, 0)
    server.kill()
    await publish_some(5, 40)
    assert refused == 5, "with Redis down, publishing fails loudly"
    await asyncio.to_thread(server.start)
    async with httpx.AsyncClient() as http:
        for hub in (first, second):
            await wait_until_async(partial(_ready, http, hub), 20, "readyz after the restart")
    await publish_some(40, 45)
    await wait_until_async(
        lambda: len(client.events) >= len(acknowledged), 30, "every acknowledged update"
    )
    await asyncio.sleep(0.5)
    assert [(e.id, e.data) for e in client.events] == acknowledged
    resumed = await subscribed(second.url, query, acknowledged[0][0])
    events = await received(resumed, len(acknowledged) - 1)
    assert [(e.id, e.data) for e in events] == acknowledged[1:]
    await client.close()


async def _ready(http: httpx.AsyncClient, hub: Gateway) -> bool:
    return (await http.get(f"{hub.url}/readyz")).status_code == 200


async def test_a_trimmed_update_still_resumes_after_its_place(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    """The hub's IDs name a place in the order: when the update itself was trimmed, what
    is left after it is replayed, and the response says some may be missing."""
    hub = gateway(ENV)
    ids = [await publish(hub.url, BOOKS + "1", f"{n}") for n in range(5)]
    partition, _, entry = ids[1].removeprefix("#").partition(":")
    stream_key = Keys(key_prefix).stream(partition_topic(int(partition)))
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.xdel(stream_key, entry) == 1
    finally:
        await client.aclose()
    resumed = await subscribed(hub.url, [("match", BOOKS + "1")], ids[1])
    assert resumed.headers is not None and resumed.headers["last-event-id"] == "earliest"
    assert datas(await received(resumed, 3)) == ["2", "3", "4"]
