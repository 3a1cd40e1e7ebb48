"""`POST /publish`: for web pages and curl, behind a bearer token; one event or a batch."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest
import redis
from processes import Gateways, RedisServers
from sse_client import ids_increase, listening, stream_entries

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
        (None, "a string", 400, "send a JSON object"),
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


# --- batches -----------------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NDJSON = {**AUTH, "content-type": "application/x-ndjson"}
SECRET = "a-test-secret-of-at-least-32-bytes!"


async def test_a_json_array_publishes_a_full_batch_in_order_on_many_topics(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": TOKEN})
    topics = [f"batch/{n}" for n in range(50)]
    # A full batch (HUB_MAX_BATCH_EVENTS) whose data are small JSON structures fits the
    # limit on arrays, objects and members that a batch gets.
    events = [
        {"topic": topics[n % 50], "data": {"n": n, "ok": True}, "type": "t" if n % 3 else ""}
        for n in range(1_000)
    ]
    async with (
        listening(hub.url, [topics[7]]) as [client],
        httpx.AsyncClient(base_url=hub.url) as http,
    ):
        response = await http.post("/publish", json=events, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        await client.wait_for(20, any_type=True)
    assert (answer["published"], answer["failed"]) == (1_000, 0)
    ids = [result["id"] for result in answer["results"]]
    for t, topic in enumerate(topics):
        numbers = range(t, 1_000, 50)
        expected = [(ids[n], "t" if n % 3 else "", f'{{"n":{n},"ok":true}}') for n in numbers]
        assert stream_entries(redis_url, key_prefix, topic) == expected
        assert ids_increase([ids[n] for n in numbers]), [ids[n] for n in numbers]
    assert [e.id for e in client.events] == [ids[n] for n in range(7, 1_000, 50)]


async def test_ndjson_publishes_one_event_per_line(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": TOKEN})
    lines = [json.dumps({"topic": "nd", "data": f"line {n} ✓", "type": "log"}) for n in range(300)]
    body = ("\n\n".join(lines[:100]) + "\r\n" + "\n".join(lines[100:]) + "\n  \n").encode()
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post("/publish", content=body, headers=NDJSON)
        one = await http.post("/publish", content=lines[0].encode(), headers=NDJSON)
        single = await http.post("/publish", json=[{"topic": "nd", "data": "x"}], headers=AUTH)
    assert response.status_code == one.status_code == single.status_code == 200, response.text
    answer = response.json()
    assert (answer["published"], answer["failed"]) == (300, 0)
    # A batch of one is answered as a batch.
    assert [one.json()["published"], single.json()["published"]] == [1, 1]
    ids = [r["id"] for r in answer["results"]]
    stored = stream_entries(redis_url, key_prefix, "nd")
    assert stored[:300] == [(i, "log", f"line {n} ✓") for n, i in enumerate(ids)]
    assert [i for i, _, _ in stored[300:]] == [one.json()["results"][0]["id"],
                                               single.json()["results"][0]["id"]]  # fmt: skip
    assert ids_increase([i for i, _, _ in stored]), [i for i, _, _ in stored]


async def test_invalid_events_fail_alone_and_the_others_are_published(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": TOKEN, "HUB_MAX_EVENT_BYTES": "1000"})
    events: list[dict[str, object]] = [
        {"topic": "mixed", "data": "first"},
        {"topic": "bad topic", "data": "x"},
        {"topic": "mixed", "data": "x", "type": "stream-reset"},
        {"topic": "mixed", "data": "x" * 1_001},
        {"topic": "mixed"},
        {"data": "no topic"},
        {"topic": "mixed", "data": "x", "type": 7},
        {"topic": "mixed", "data": "last", "type": "ok"},
    ]
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post("/publish", json=events, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["published"], answer["failed"]) == (2, 6)
    results = answer["results"]
    assert [r.get("status") for r in results] == [None, 400, 400, 413, 400, 400, 400, None]
    reasons = [r.get("error", "") for r in results]
    assert "contains ' '" in reasons[1] and "reserved" in reasons[2]
    assert "over the limit of 1000" in reasons[3] and "'data' is missing" in reasons[4]
    assert "'topic' is missing" in reasons[5] and "must be a string" in reasons[6]
    assert all("\n" not in reason for reason in reasons)
    assert stream_entries(redis_url, key_prefix, "mixed") == [
        (results[0]["id"], "", "first"),
        (results[7]["id"], "ok", "last"),
    ]


def jwt_for(publish: list[str]) -> str:
    claims = {"mercure": {"publish": publish}, "exp": int(time.time() + 600)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_a_token_limited_to_some_topics_publishes_only_those(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway({"HUB_JWT_KEY": SECRET})
    events = [{"topic": t, "data": str(n)} for n, t in enumerate(["user/1/a", "user/2/a",
                                                                  "user/1/b", "news"])]  # fmt: skip
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post(
            "/publish", json=events, headers={"Authorization": f"Bearer {jwt_for(['user/1/*'])}"}
        )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r.get("status") for r in results] == [None, 403, None, 403]
    assert "user/2/a" in results[1]["error"] and "news" in results[3]["error"]
    assert stream_entries(redis_url, key_prefix, "user/1/a") == [(results[0]["id"], "", "0")]
    assert (
        stream_entries(redis_url, key_prefix, "user/2/a")
        == stream_entries(redis_url, key_prefix, "news")
        == []
    )


LIMITS = {
    "HUB_PUBLISH_TOKEN": TOKEN,
    "HUB_MAX_BATCH_EVENTS": "10",
    "HUB_MAX_BATCH_BYTES": "20000",
    "HUB_MAX_JSON_VALUES": "100",
    "HUB_MAX_JSON_DEPTH": "4",
}
"""With these, a batch may hold 100 + 16 × 10 = 260 arrays, objects and members."""


def plain(count: int, data: object = "x") -> list[dict[str, object]]:
    return [{"topic": "limits", "data": data} for _ in range(count)]


def ndjson(items: list[dict[str, object]]) -> bytes:
    return "\n".join(json.dumps(item) for item in items).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"[]", "json", 400, "the batch is empty"),
        (b"\n \n", "x-ndjson", 400, "the batch is empty"),
        (json.dumps([{"topic": "limits", "data": "x"}, 3]).encode(), "json", 400,
         "event 1 of the batch is not a JSON object"),
        (b'{"topic": "limits", "data": "x"}\n\n"text"', "x-ndjson", 400,
         "line 3 is not a JSON object"),
        (b'{"topic": "limits", "data": "x"}\n{nope', "x-ndjson", 400, "line 2 is not valid JSON"),
        (b'[{"topic": "limits", "data": "x"},', "json", 400, "not valid JSON"),
        (json.dumps(plain(11)).encode(), "json", 413, "11 events, over the limit of 10"),
        (ndjson(plain(11)), "x-ndjson", 413, "over 10 events"),
        (json.dumps(plain(10, "x" * 2_000)).encode(), "json", 413,
         "over the limit of 20000 bytes"),
        (json.dumps(plain(10, list(range(30)))).encode(), "json", 413,
         "over 100 arrays, objects and members, besides 16 for each of up to 10 events"),
        (ndjson(plain(10, list(range(30)))), "x-ndjson", 413, "besides 16 for each"),
        (json.dumps(plain(1, [[[[1]]]])).encode(), "json", 400, "deeper than 5 levels"),
        (ndjson(plain(1, [[[[1]]]])), "x-ndjson", 400, "deeper than 4 levels"),
    ],
)  # fmt: skip
async def test_a_batch_over_a_limit_or_malformed_is_refused_whole(
    gateway: Gateways,
    redis_url: str,
    key_prefix: str,
    body: bytes,
    content_type: str,
    status: int,
    reason: str,
) -> None:
    hub = gateway(LIMITS)
    headers = {**AUTH, "content-type": f"application/{content_type}"}
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post("/publish", content=body, headers=headers)
        assert response.status_code == status, response.text
        assert reason in response.text and response.text.count("\n") == 1
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["connection"] == "close"
        # Just inside every limit, the same batch shapes are published.
        fits = plain(10, list(range(12)))  # 10 × (4 + 12) + 1 = 161 of 260
        assert (await http.post("/publish", json=fits, headers=AUTH)).status_code == 200
        deep = plain(1, [[[1]]])  # array, object, then three levels of data: 5
        assert (await http.post("/publish", json=deep, headers=AUTH)).status_code == 200
        assert (await http.post("/publish", content=ndjson(plain(10)), headers=NDJSON)).json()[
            "published"
        ] == 10
    assert len(stream_entries(redis_url, key_prefix, "limits")) == 21


async def test_an_object_body_keeps_the_one_event_limit(gateway: Gateways) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": TOKEN, "HUB_MAX_EVENT_BYTES": "1000"})
    one_event_limit = 1000 * 6 + 65_536
    huge = json.dumps({"topic": "t", "data": "x" * 100_000}).encode()
    async with httpx.AsyncClient(base_url=hub.url) as http:
        response = await http.post("/publish", content=huge, headers={**AUTH, "content-type":
                                                                        "application/json"})  # fmt: skip
    assert response.status_code == 413
    assert f"over the limit of {one_event_limit} bytes" in response.text


async def test_the_token_is_checked_before_a_batch_body_is_read(gateway: Gateways) -> None:
    hub = gateway({"HUB_PUBLISH_TOKEN": TOKEN})
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        # A body declared far over every limit, of which not a byte is sent.
        writer.write(
            b"POST /publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer wrong\r\n"
            b"content-type: application/x-ndjson\r\ncontent-length: 900000000\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 401")
    assert b"connection: close" in head.lower()


async def test_events_not_written_when_redis_fails_get_503_and_no_id(
    gateway: Gateways, private_redis: RedisServers, key_prefix: str
) -> None:
    server = private_redis()
    hub = gateway(
        {"HUB_PUBLISH_TOKEN": TOKEN, "HUB_REDIS_TIMEOUT_SECONDS": "1"}, redis_url=server.url
    )
    server.close()
    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as http:
        response = await http.post("/publish", json=plain(5), headers=AUTH)
        single = await http.post("/publish", json=plain(1)[0], headers=AUTH)
        assert (await http.get("/healthz")).status_code == 200
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["published"], answer["failed"]) == (0, 5)
    assert all(r["status"] == 503 and "id" not in r for r in answer["results"])
    assert "redis unavailable" in answer["results"][0]["error"]
    # Once Redis failed for one event, the others were not sent (or failed the same way).
    assert all("not sent" in r["error"] or "redis" in r["error"] for r in answer["results"])
    assert single.status_code == 503 and "redis unavailable" in single.text
