"""`POST /publish`: for web pages and curl, behind a bearer token."""

from __future__ import annotations

import httpx
import pytest
import redis
from processes import Gateways
from sse_client import listening

from hub.topics import Keys

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"


async def test_a_json_publish_reaches_subscribers_with_its_id(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": TOKEN})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        listening(hub.url, ["news"]) as [client],
        httpx.AsyncClient(base_url=hub.url) as http,
    ):
        sent = await http.post(
            "/publish", json={"topic": "news", "data": "hi\nthere", "type": "greet"}, headers=auth
        )
        form = await http.post(
            "/publish", data={"topic": "news", "data": "from a form"}, headers=auth
        )
        value = await http.post("/publish", json={"topic": "news", "data": {"n": 1}}, headers=auth)
        await client.wait_for(3, any_type=True)
    assert sent.status_code == form.status_code == value.status_code == 200
    assert [e.id for e in client.events] == [r.json()["id"] for r in (sent, form, value)]
    assert [(e.event, e.data) for e in client.events] == [
        ("greet", "hi\nthere"),
        ("message", "from a form"),
        ("message", '{"n":1}'),
    ]


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({}, {"topic": "news", "data": "x"}, 401, "Authorization: Bearer"),
        ({"Authorization": "Bearer wrong"}, {"topic": "news", "data": "x"}, 401, "not valid"),
        ({"Authorization": "Basic " + TOKEN}, {"topic": "news", "data": "x"}, 401, "Bearer"),
        (None, {"data": "x"}, 400, "'topic' is missing"),
        (None, {"topic": "news"}, 400, "'data' is missing"),
        (None, {"topic": "bad topic", "data": "x"}, 400, "contains ' '"),
        (None, {"topic": "news", "data": "x", "type": "two words"}, 400, "event type"),
        (None, {"topic": "news", "data": "x", "type": 3}, 400, "must be a string"),
        (None, {"topic": "news", "data": "x", "type": "stream-reset"}, 400, "reserved"),
        (None, {"topic": "news", "data": "x", "type": "hub-anything"}, 400, "reserved"),
        (None, {"topic": "news", "data": "x" * 2000}, 413, "over the limit"),
        (None, ["not", "an", "object"], 400, "JSON object"),
    ],
)
async def test_bad_publishes_get_a_reason_and_write_nothing(
    gateway: Gateways,
    redis_url: str,
    key_prefix: str,
    headers: dict[str, str] | None,
    body: object,
    status: int,
    reason: str,
) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": TOKEN, "HUB_MAX_EVENT_BYTES": "1000"})
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post(
            "/publish",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"} if headers is None else headers,
        )
        assert response.status_code == status, response.text
        assert reason in response.text
        assert (await http.get("/healthz")).status_code == 200
    assert redis.Redis.from_url(redis_url).exists(Keys(key_prefix).stream("news")) == 0


async def test_malformed_bodies_are_refused(gateway: Gateways) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": TOKEN, "HUB_MAX_EVENT_BYTES": "1000"})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=hub.url) as http:
        broken = await http.post(
            "/publish", content=b"{nope", headers={**auth, "content-type": "application/json"}
        )
        assert broken.status_code == 400 and "not valid JSON" in broken.text
        xml = await http.post(
            "/publish", content=b"<x/>", headers={**auth, "content-type": "text/xml"}
        )
        assert xml.status_code == 415
        huge = await http.post(
            "/publish", content=b"x" * 200_000, headers={**auth, "content-type": "application/json"}
        )
        assert huge.status_code == 413
        binary = await http.post("/publish", content=b"topic=a&data=\xff", headers=auth)
        assert binary.status_code == 400


async def test_publishing_over_http_is_off_without_a_token(gateway: Gateways) -> None:
    hub = gateway()
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post("/publish", json={"topic": "news", "data": "x"})
    assert response.status_code == 404
    assert "HUB_PUBLISH_TOKEN" in response.text
