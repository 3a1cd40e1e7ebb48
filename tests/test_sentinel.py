"""The hub on a Sentinel-managed primary: it finds the primary by name and follows a failover.

Real `redis-server` processes: a primary, a replica, and three Sentinels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from failover import WaitingPublisher, listen_everywhere, settle_and_tally
from processes import Gateways
from redis_topologies import SERVICE_NAME, SentinelProcesses
from sse_client import Listener, ReconnectingListener, connected, publisher

pytestmark = pytest.mark.anyio


@pytest.fixture
def sentinels() -> Iterator[SentinelProcesses]:
    with SentinelProcesses(replicas=1, sentinels=3) as started:
        yield started


async def test_the_gateway_and_the_publisher_find_the_primary_through_sentinels(
    sentinels: SentinelProcesses, gateway: Gateways, key_prefix: str
) -> None:
    hub = gateway(redis_url=sentinels.url)
    client = Listener(hub.url, ["news"]).start()
    await client.wait_connected()
    async with publisher(sentinels.url, key_prefix, publish_wait_replicas=1) as pub:
        event_id = await pub.publish("news", "via sentinel")
    await client.wait_for(1)
    assert client.data == ["via sentinel"]
    with sentinels.current_primary().client() as redis:
        assert redis.xrange(f"{key_prefix}stream:{{news}}")[0][0].decode() == event_id
    for replica in sentinels.replicas:
        with replica.client() as redis:
            assert redis.xlen(f"{key_prefix}stream:{{news}}") == 1, "WAIT: the replica has it"
    await client.close()


async def test_a_sentinel_failover_loses_no_acknowledged_event(
    sentinels: SentinelProcesses, gateway: Gateways, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = [f"feed-{n}" for n in range(6)]
    env = {"HUB_RETRY_MS": "400", "HUB_REDIS_TIMEOUT_SECONDS": "2"}
    hubs = [gateway(env, redis_url=sentinels.url) for _ in range(2)]
    clients = await listen_everywhere(hubs, topics)

    steady = WaitingPublisher(sentinels.url, key_prefix, topics, rate=200, wait_replicas=1)
    publishing = asyncio.create_task(steady.run(seconds=10))
    await asyncio.sleep(2.5)
    old = sentinels.current_primary()
    old.kill()
    killed_at = time.monotonic()
    new = await asyncio.to_thread(sentinels.wait_failover, old)
    took_over = time.monotonic() - killed_at
    # Back, empty, as a replica of the new primary: waiting for a replica works again.
    await asyncio.to_thread(sentinels.rejoin, old)
    await publishing
    with capsys.disabled():
        print(f"\n[sentinel failover] port {new.port} took over {took_over:.1f} s after the kill")
    await settle_and_tally(clients, steady, "sentinel failover", capsys)
    assert all(len(events) > 20 for events in steady.acknowledged.values())
    async with httpx.AsyncClient() as http:
        for hub in hubs:
            assert (await http.get(f"{hub.url}/readyz")).status_code == 200
            assert "redis subscription lost" in hub.log_text()


async def test_a_switchover_with_the_old_primary_alive_loses_nothing(
    sentinels: SentinelProcesses, gateway: Gateways, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`SENTINEL FAILOVER`: the old primary turns replica (writes get READONLY) instead of dying."""
    topics = [f"feed-{n}" for n in range(4)]
    hub = gateway({"HUB_RETRY_MS": "400"}, redis_url=sentinels.url)
    clients = await connected([ReconnectingListener(hub.url, [topic]).start() for topic in topics])
    steady = WaitingPublisher(sentinels.url, key_prefix, topics, rate=100, wait_replicas=1)
    publishing = asyncio.create_task(steady.run(seconds=9))
    await asyncio.sleep(1.5)
    old = sentinels.current_primary()
    with sentinels.sentinels[0].client() as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE_NAME)
    new = await asyncio.to_thread(sentinels.wait_failover, old)
    # The Sentinels announce the switch (+switch-master): the gateway moves at once, not
    # at its next periodic check (5 s).
    await asyncio.sleep(1.0)
    with new.client() as redis:
        assert redis.pubsub_numsub(f"{key_prefix}channel:{{{topics[0]}}}")[0][1] == 1, (
            "the gateway moved its subscription to the new primary"
        )
    await publishing
    await settle_and_tally(clients, steady, "sentinel switchover", capsys)
