"""Authorization: private topics need a JWT that covers them, live and on replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from processes import Gateways, wait_until_async
from sse_client import publisher

pytestmark = pytest.mark.anyio
SECRET = "a-test-secret-of-at-least-32-bytes!"
PRIVATE = {"HUB_JWT_KEY": SECRET, "HUB_PRIVATE_TOPICS": "user/*", "HUB_RETRY_MS": "300"}


def token(
    subscribe: Sequence[str] = (),
    publish: Sequence[str] = (),
    ttl: float = 600,
    key: Any = SECRET,
    algorithm: str = "HS256",
) -> str:
    claims = {
        "mercure": {"subscribe": list(subscribe), "publish": list(publish)},
        "exp": int(time.time() + ttl),
    }
    return jwt.encode(claims, key, algorithm=algorithm)


async def status_of(
    url: str,
    params: dict[str, Any],
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=url, cookies=cookies) as http:
        async with http.stream("GET", "/events", params=params, headers=headers or {}) as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code, response.text
            return 200, ""


async def test_a_private_topic_needs_a_token_that_covers_it(gateway: Gateways) -> None:
    hub = gateway(PRIVATE)
    private = {"topic": "user/42/inbox"}
    assert (await status_of(hub.url, {"topic": "news"}))[0] == 200, "public topics need nothing"
    status, reason = await status_of(hub.url, private)
    assert status == 401 and "token is required" in reason
    status, reason = await status_of(hub.url, private, {"Authorization": "Bearer nonsense"})
    assert status == 401 and "not valid" in reason
    status, reason = await status_of(
        hub.url, private, {"Authorization": f"Bearer {token(['user/43/*'])}"}
    )
    assert status == 403 and "user/42/inbox" in reason
    mixed = {"topic": ["news", "user/42/inbox"]}
    assert (await status_of(hub.url, mixed, {"Authorization": f"Bearer {token(['news'])}"}))[
        0
    ] == 403
    good = token(["user/42/*"])
    assert (await status_of(hub.url, private, {"Authorization": f"Bearer {good}"}))[0] == 200
    assert (await status_of(hub.url, private, cookies={"mercureAuthorization": good}))[0] == 200
    assert (await status_of(hub.url, {**private, "authorization": good}))[0] == 200
    expired = token(["user/42/*"], ttl=-5)
    status, reason = await status_of(hub.url, private, {"Authorization": f"Bearer {expired}"})
    assert status == 401 and "expired" in reason


async def test_private_events_reach_only_covered_connections_live_and_on_replay(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway(PRIVATE)
    # Published last on each topic: a connection has all it will get once it has its topics' ends.
    ends = {"news": "public end", "user/42/inbox": "42 end"}

    async def collect(
        http: httpx.AsyncClient,
        topics: list[str],
        bearer: str,
        last_id: str = "",
        connected: asyncio.Event | None = None,
    ) -> list[str]:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("topic", topic) for topic in topics
        ]
        until = {ends[topic] for topic in topics}
        if last_id:
            params.append(("last_event_id", last_id))
        data: list[str] = []
        try:
            async with asyncio.timeout(20):
                async with http.stream(
                    "GET", "/events", params=params, headers={"Authorization": f"Bearer {bearer}"}
                ) as response:
                    assert response.status_code == 200, f"{topics}: {response.status_code}"
                    if connected is not None:
                        connected.set()
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            data.append(line[6:])
                            if until <= set(data):
                                return data
        except TimeoutError:
            raise AssertionError(
                f"{topics} from {last_id or 'now'}: not {until} within 20 s, got {data}"
            ) from None
        raise AssertionError(
            f"{topics} from {last_id or 'now'}: the stream ended before {until}, got {data}"
        )

    async with (
        httpx.AsyncClient(base_url=hub.url, timeout=10) as http,
        publisher(redis_url, key_prefix) as pub,
    ):
        connected = asyncio.Event()
        live = asyncio.create_task(
            collect(http, ["news", "user/42/inbox"], token(["user/42/*"]), connected=connected)
        )
        await asyncio.wait_for(connected.wait(), 10)
        first = await pub.publish("news", "public 0")
        await pub.publish("user/42/inbox", "for 42 only")
        await pub.publish("user/43/inbox", "for 43 only")
        await pub.publish("news", "public 1")
        for topic, end in ends.items():
            await pub.publish(topic, end)
        everything = sorted(["public 0", "for 42 only", "public 1", *ends.values()])
        assert sorted(await live) == everything
        # Replay from before everything, on a connection mixing public and private topics.
        replayed = await collect(http, ["news", "user/42/inbox"], token(["user/42/*"]), "0.0.0")
        assert sorted(replayed) == everything
        assert await collect(http, ["news"], token([]), first) == ["public 1", "public end"]


async def test_a_stream_ends_when_its_token_expires_and_cannot_resume_with_it(
    gateway: Gateways,
) -> None:
    hub = gateway(PRIVATE)
    short = token(["user/42/*"], ttl=2)
    expires = jwt.decode(short, options={"verify_signature": False})["exp"]
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        started = time.monotonic()
        async with http.stream(
            "GET",
            "/events",
            params={"topic": "user/42/inbox"},
            headers={"Authorization": f"Bearer {short}"},
        ) as response:
            assert response.status_code == 200
            async for _ in response.aiter_bytes():
                pass  # ends when the token does
        ended = time.monotonic() - started
        assert 1.0 < ended < 8, (
            f"the stream ended {ended:.1f} s after it opened, its token lasting 1-2 s"
        )
        await wait_until_async(lambda: time.time() > expires, 5, "the token's expiry time")
        again = await http.get(
            "/events",
            params={"topic": "user/42/inbox"},
            headers={"Authorization": f"Bearer {short}"},
        )
        assert again.status_code == 401, again.text


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_tokens_signed_with_a_private_key_are_verified_with_the_public_key(
    gateway: Gateways, tmp_path: Path, algorithm: str
) -> None:
    private_key = (
        rsa.generate_private_key(65537, 2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(public_pem)
    hub = gateway(
        {
            "HUB_JWT_KEY": str(key_file),
            "HUB_JWT_ALGORITHMS": "RS256,ES256",
            "HUB_PRIVATE_TOPICS": "user/*",
        }
    )
    signed = token(["user/42/*"], key=private_key, algorithm=algorithm)
    assert (
        await status_of(hub.url, {"topic": "user/42/inbox"}, {"Authorization": f"Bearer {signed}"})
    )[0] == 200
    forged = token(["user/42/*"])  # HS256 with a secret: not accepted
    assert (
        await status_of(hub.url, {"topic": "user/42/inbox"}, {"Authorization": f"Bearer {forged}"})
    )[0] == 401


async def test_publishing_needs_publish_claims_for_the_topic(gateway: Gateways) -> None:
    hub = gateway({**PRIVATE, "HUB_PUBLISH_TOKEN": "fixed-token"})
    async with httpx.AsyncClient(base_url=hub.url) as http:

        async def publish(bearer: str, topic: str) -> httpx.Response:
            return await http.post(
                "/publish",
                json={"topic": topic, "data": "x"},
                headers={"Authorization": f"Bearer {bearer}"},
            )

        assert (await publish(token(publish=["user/42/*"]), "user/42/inbox")).status_code == 200
        refused = await publish(token(publish=["user/42/*"]), "user/43/inbox")
        assert refused.status_code == 403 and "user/43/inbox" in refused.text
        assert (await publish(token(subscribe=["*"]), "news")).status_code == 403
        assert (await publish(token(publish=["*"], ttl=-5), "news")).status_code == 401
        assert (await publish("fixed-token", "anything")).status_code == 200


async def test_requests_over_the_limits_are_refused_with_a_reason(gateway: Gateways) -> None:
    hub = gateway(
        {
            "HUB_MAX_URL_BYTES": "512",
            "HUB_MAX_HEADER_BYTES": "2048",
            "HUB_MAX_STREAMS_PER_CLIENT": "2",
        }
    )
    async with httpx.AsyncClient(base_url=hub.url) as http:
        long_url = await http.get("/events", params={"topic": "a" * 100, "x": "y" * 600})
        assert long_url.status_code == 414 and "limit of 512" in long_url.text
        big_headers = await http.get("/healthz", headers={"X-Filler": "z" * 3000})
        assert big_headers.status_code == 431
        async with (
            http.stream("GET", "/events", params={"topic": "a"}) as one,
            http.stream("GET", "/events", params={"topic": "b"}) as two,
        ):
            assert one.status_code == two.status_code == 200
            third = await http.get("/events", params={"topic": "c"})
            assert third.status_code == 429 and "2 streams per client" in third.text
        assert (await http.get("/healthz")).status_code == 200


def test_the_cli_publishes_through_a_gateway_with_a_publish_token(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    import subprocess
    import sys

    import redis as redis_client

    from hub.topics import Keys

    hub = gateway(PRIVATE)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "publisher.cli", "--hub", hub.url, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    sent = cli("--token", token(publish=["user/42/*"]), "send", "user/42/inbox", "via the gateway")
    assert sent.returncode == 0, sent.stderr
    [(sid, fields)] = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        redis_client.Redis.from_url(redis_url).xrange(Keys(key_prefix).stream("user/42/inbox")),
    )
    assert sid.decode() == sent.stdout.strip() and fields[b"d"] == b"via the gateway"
    refused = cli("--token", token(publish=["user/42/*"]), "send", "user/43/inbox", "not mine")
    assert refused.returncode == 1
    assert (
        refused.stderr.count("\n") == 1
        and "403" in refused.stderr
        and "Traceback" not in refused.stderr
    )
    missing = cli("send", "user/42/inbox", "x")
    assert missing.returncode == 1 and "--hub needs --token" in missing.stderr
