"""The gateway and the publisher run as Redis ACL users with only the rights they need."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from processes import Gateways, RedisServers
from sse_client import listening

from hub.acl import gateway_rules, publisher_rules, setuser
from hub.config import Settings
from hub.topics import Keys
from publisher import Publisher

pytestmark = pytest.mark.anyio


def as_user(url: str, user: str) -> str:
    return url.replace("redis://", f"redis://{user}:{user}-password@")


async def test_acl_users_can_do_their_job_and_nothing_more(
    gateway: Gateways, private_redis: RedisServers, key_prefix: str
) -> None:
    server = private_redis()
    admin = server.client()
    for user, rules in (
        ("hub-gateway", gateway_rules(key_prefix)),
        ("hub-publisher", publisher_rules(key_prefix)),
    ):
        admin.execute_command(*setuser(user, f"{user}-password", rules))  # type: ignore[no-untyped-call]
    keys = Keys(key_prefix)

    hub = gateway(redis_url=as_user(server.url, "hub-gateway"))
    publishing = Settings(redis_url=as_user(server.url, "hub-publisher"), key_prefix=key_prefix)
    with Publisher(publishing) as pub:
        first = pub.publish("news", "before")
    async with listening(hub.url, ["news"]) as [live]:
        with Publisher(publishing) as pub:
            pub.publish("news", "live")
        await live.wait_for(1)
    assert live.data == ["live"]
    async with listening(hub.url, ["news"], last_event_id=first) as [resumed]:
        await resumed.wait_for(1)
    assert resumed.data == ["live"], "replay works with read-only rights"

    gateway_user = redis.Redis.from_url(as_user(server.url, "hub-gateway"))
    refusals: tuple[Callable[[], object], ...] = (
        lambda: gateway_user.xadd(keys.stream("news"), {"d": "forged"}),
        lambda: gateway_user.publish(keys.channel("news"), "forged"),
        lambda: gateway_user.delete(keys.stream("news")),
        lambda: gateway_user.xrange("someone-elses-key"),
        lambda: gateway_user.flushall(),
        lambda: gateway_user.config_get("*"),
    )
    for refused in refusals:
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()

    publisher_user = redis.Redis.from_url(as_user(server.url, "hub-publisher"))
    refusals = (
        lambda: publisher_user.xrange(keys.stream("news")),
        lambda: publisher_user.delete(keys.stream("news")),
        lambda: publisher_user.set("other", "x"),
        lambda: publisher_user.xadd("someone-elses-key", {"d": "x"}),
        lambda: publisher_user.flushall(),
        lambda: publisher_user.execute_command("SUBSCRIBE", keys.channel("news")),  # type: ignore[no-untyped-call]
    )
    for refused in refusals:
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
