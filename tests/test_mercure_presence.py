"""Mercure's active subscriptions, across gateways: their events and the subscriptions API.

Real gateway processes share the real Redis; a subscription opened on one
gateway is announced to subscribers of another, listed by every gateway's API,
and ended once, by a surviving gateway, when the gateway holding it dies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
import redis
from processes import Gateways, wait_until_async
from sse_client import Listener

pytestmark = pytest.mark.anyio
SECRET = "a-test-secret-of-at-least-32-bytes!"
HUB = "https://hub.example/"
ENV = {"HUB_JWT_KEY": SECRET, "HUB_PUBLIC_URL": HUB, "HUB_RETRY_MS": "300"}
MERCURE = "/.well-known/mercure"
SUBSCRIPTIONS = "/.well-known/mercure/subscriptions"
BOOKS = "https://example.com/books/"


def token(
    subscribe: Sequence[dict[str, str]] = (),
    payload: dict[str, Any] | None = None,
    ttl: float = 600,
    **claims: Any,
) -> str:
    """A token in the current form: `authorization_details`, `typ: at+jwt`, `exp`."""
    detail: dict[str, Any] = {"type": "mercure", "actions": ["subscribe"], "topics": [*subscribe]}
    if payload is not None:
        detail["payload"] = payload
    body = {"authorization_details": [detail], "exp": int(time.time() + ttl), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})


def legacy_token(subscribe: Sequence[str], **claims: Any) -> str:
    """A token in the older dialect: a `mercure` claim of topic selectors."""
    body = {"mercure": {"subscribe": list(subscribe)}, "exp": int(time.time() + 600), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


WATCHER = token(
    [
        {"match": SUBSCRIPTIONS},
        {"match": SUBSCRIPTIONS + "/*", "matchType": "URLPattern"},
    ],
    sub="https://example.com/users/watcher",
)
"""May read every subscription event and every resource of the API."""
WATCHING = [("matchURLPattern", SUBSCRIPTIONS + "/*")]


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def subscription_id(match_type: str, match: str, subscriber: str) -> str:
    return f"{SUBSCRIPTIONS}/{match_type}/{quote(match, safe='')}/{quote(subscriber, safe='')}"


async def subscribed(
    url: str, query: Sequence[tuple[str, str]], headers: dict[str, str] | None = None
) -> Listener:
    listener = Listener(
        url, [], path=MERCURE, query=list(query), request_headers=headers or {}
    ).start()
    await listener.wait_connected()
    assert listener.status == 200
    return listener


def documents(listener: Listener) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in listener.events]


def announced(listener: Listener, subscription: str, active: bool) -> list[dict[str, Any]]:
    return [d for d in documents(listener) if d["id"] == subscription and d["active"] is active]


async def wait_announced(
    listener: Listener, subscription: str, active: bool, within: float = 20.0
) -> dict[str, Any]:
    await wait_until_async(
        lambda: announced(listener, subscription, active),
        within,
        f"active={active} for {subscription}",
        observe=lambda: [(d["id"], d["active"]) for d in documents(listener)],
        interval=0.05,
    )
    return announced(listener, subscription, active)[0]


async def api(url: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as http:
        return await http.get(path, headers=headers or {})


async def listed(url: str, path: str = SUBSCRIPTIONS) -> list[str]:
    response = await api(url, path, bearer(WATCHER))
    assert response.status_code == 200, response.text
    return [document["id"] for document in response.json()["subscriptions"]]


async def test_subscriptions_are_announced_and_listed_by_every_gateway(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    a, b = gateway.many(2, ENV)
    watcher = await subscribed(a.url, WATCHING, bearer(WATCHER))
    # The older dialect: a URI template selector, in the query and in the token.
    template = SUBSCRIPTIONS + "/{matchType}/{topic}/{subscriber}"
    legacy = await subscribed(
        b.url, [("topic", template)], bearer(legacy_token([template], sub="urn:legacy"))
    )
    anonymous_watcher = await subscribed(a.url, WATCHING)

    reader = "https://example.com/users/c"
    payload = {"tenant": "t1"}
    reader_token = token([{"match": BOOKS + "1"}], payload=payload, sub=reader)
    reader_stream = await subscribed(b.url, [("match", BOOKS + "1")], bearer(reader_token))
    anonymous = await subscribed(b.url, [("matchURLPattern", BOOKS + ":id")])

    mine = subscription_id("Exact", BOOKS + "1", reader)
    document = await wait_announced(watcher, mine, True)
    assert document == {
        "@context": "https://mercure.rocks/",
        "id": mine,
        "type": "Subscription",
        "matchType": "Exact",
        "match": BOOKS + "1",
        "subscriber": reader,
        "active": True,
        "payload": payload,
    }
    assert watcher.events[-1].id.startswith("#"), "an update like any other, with its ID"
    await wait_announced(legacy, mine, True)

    # The hub names a subscriber without a token: a UUID URN, never the client's choice.
    def anonymous_events() -> list[dict[str, Any]]:
        return [d for d in documents(watcher) if d["match"] == BOOKS + ":id"]

    await wait_until_async(anonymous_events, 20, "the anonymous subscription's event")
    [other] = anonymous_events()
    assert other["matchType"] == "URLPattern"
    assert other["subscriber"].startswith("urn:uuid:") and "payload" not in other
    assert other["id"] == subscription_id("URLPattern", BOOKS + ":id", other["subscriber"])

    own = subscription_id("URLPattern", SUBSCRIPTIONS + "/*", "https://example.com/users/watcher")
    for hub in (a, b):
        ids = await listed(hub.url)
        assert {mine, other["id"], own} <= set(ids), f"{hub.url} lists every gateway's"
    response = await api(b.url, SUBSCRIPTIONS, bearer(WATCHER))
    assert response.headers["content-type"] == "application/ld+json"
    assert response.headers["link"] == f'<{HUB}.well-known/mercure>; rel="mercure"'
    body = response.json()
    assert body["@context"] == "https://mercure.rocks/" and body["type"] == "Subscriptions"
    assert body["id"] == SUBSCRIPTIONS and body["lastEventID"].startswith("#")

    single = await api(a.url, mine, bearer(WATCHER))
    assert single.status_code == 200, single.text
    assert single.headers["content-type"] == "application/ld+json"
    assert single.json() == {**document, "lastEventID": single.json()["lastEventID"]}
    by_matcher = f"{SUBSCRIPTIONS}/Exact/{quote(BOOKS + '1', safe='')}"
    assert await listed(a.url, by_matcher) == [mine]

    # The registry: one hash per gateway, both gateways alive.
    with redis.Redis.from_url(redis_url) as client:
        assert client.zcard(f"{key_prefix}mercure:gateways") == 2

    await reader_stream.close()
    ended = await wait_announced(watcher, mine, False)
    assert {**ended, "active": True} == document
    await wait_announced(legacy, mine, False)
    for hub in (a, b):
        assert mine not in await listed(hub.url)
    assert (await api(a.url, mine, bearer(WATCHER))).status_code == 404

    await asyncio.sleep(0.5)
    assert anonymous_watcher.events == [], "subscription events are private"
    for listener in (watcher, legacy, anonymous_watcher, anonymous):
        await listener.close()


async def test_the_api_needs_a_token_that_covers_the_requested_resource(
    gateway: Gateways,
) -> None:
    hub = gateway(ENV)
    reader = "urn:reader"
    stream = await subscribed(
        hub.url, [("match", BOOKS + "1")], bearer(token([{"match": BOOKS + "1"}], sub=reader))
    )
    mine = subscription_id("Exact", BOOKS + "1", reader)
    await wait_until_async(lambda: _has(hub.url, mine), 20, "the subscription to be listed")

    refused = await api(hub.url, SUBSCRIPTIONS)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert (await api(hub.url, SUBSCRIPTIONS, bearer("nonsense"))).status_code == 401

    # A token for one subscription reads that one, not the collection nor another.
    narrow = bearer(token([{"match": mine}]))
    assert (await api(hub.url, mine, narrow)).status_code == 200
    assert (await api(hub.url, SUBSCRIPTIONS, narrow)).status_code == 403
    other = subscription_id("Exact", BOOKS + "2", reader)
    assert (await api(hub.url, other, narrow)).status_code == 403
    # A legacy token's selector, against the relative path, works the same.
    legacy = bearer(legacy_token([SUBSCRIPTIONS + "/{matchType}/{topic}/{subscriber}"]))
    assert (await api(hub.url, mine, legacy)).status_code == 200

    assert (await api(hub.url, other, bearer(WATCHER))).status_code == 404
    malformed = await api(hub.url, SUBSCRIPTIONS + "/Exact", bearer(WATCHER))
    assert malformed.status_code == 404
    assert (await api(hub.url, SUBSCRIPTIONS + "/Exact/x", bearer(WATCHER))).json()[
        "subscriptions"
    ] == []
    await stream.close()


async def _has(url: str, subscription: str) -> bool:
    return subscription in await listed(url)


async def test_the_api_is_gone_when_subscriptions_are_off(gateway: Gateways) -> None:
    hub = gateway({**ENV, "HUB_MERCURE_SUBSCRIPTIONS": "off"})
    watcher = await subscribed(hub.url, WATCHING, bearer(WATCHER))
    stream = await subscribed(hub.url, [("match", BOOKS + "1")])
    response = await api(hub.url, SUBSCRIPTIONS, bearer(WATCHER))
    assert response.status_code == 404 and "HUB_MERCURE_SUBSCRIPTIONS" in response.text
    await asyncio.sleep(1.0)
    assert watcher.events == [], "no subscription events"
    for listener in (watcher, stream):
        await listener.close()


@pytest.mark.slow
async def test_a_dead_gateways_subscriptions_end_once(gateway: Gateways) -> None:
    a, a2, b = gateway.many(3, ENV)
    watcher = await subscribed(a.url, WATCHING, bearer(WATCHER))
    reader = "urn:doomed"
    await subscribed(
        b.url, [("match", BOOKS + "1")], bearer(token([{"match": BOOKS + "1"}], sub=reader))
    )
    mine = subscription_id("Exact", BOOKS + "1", reader)
    await wait_announced(watcher, mine, True)
    assert mine in await listed(a2.url)

    b.kill()
    killed = time.monotonic()
    # Dead once unseen for 30 s; seen by the survivors' next refresh, 10 s apart.
    await wait_announced(watcher, mine, False, within=50)
    took = time.monotonic() - killed
    assert 15 < took < 45, f"ended {took:.1f} s after the kill"
    # Both survivors sweep, each in its turn: a whole refresh period later, still once.
    await asyncio.sleep(11)
    assert len(announced(watcher, mine, False)) == 1
    assert mine not in await listed(a.url)
    await watcher.close()
