"""The hub on a Sentinel-managed primary: it finds the primary by name and follows a failover.

Real `redis-server` processes: a primary, a replica, and three Sentinels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from failover import WaitingPublisher, listen_everywhere
from processes import SERVICE_NAME, Gateways, SentinelProcesses, wait_until
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
    sentinels: SentinelProcesses,
    gateway: Gateways,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = [f"feed-{n}" for n in range(6)]
    env = {"HUB_RETRY_MS": "400", "HUB_REDIS_TIMEOUT_SECONDS": "2"}
    hubs = [gateway(env, redis_url=sentinels.url) for _ in range(2)]
    clients = await listen_everywhere(hubs, topics)

    steady = WaitingPublisher(sentinels.url, key_prefix, topics, rate=200, wait_replicas=1)
    publishing = asyncio.create_task(steady.run())
    await steady.wait_acknowledged(20)  # mid-stream: every topic has events out before the fault
    old = sentinels.current_primary()
    old.kill()
    killed_at = time.monotonic()
    new = await asyncio.to_thread(sentinels.wait_failover, old)
    took_over = time.monotonic() - killed_at
    # Back, empty, as a replica of the new primary: waiting for a replica works again.
    await asyncio.to_thread(sentinels.rejoin, old)
    # Publishing goes on after the recovery: 10 more events on every topic.
    await steady.wait_acknowledged(steady.least_acknowledged() + 10)
    steady.stop()
    await publishing
    with capsys.disabled():
        print(f"\n[sentinel failover] port {new.port} took over {took_over:.1f} s after the kill")
    await steady.settle_and_count(clients, "sentinel failover", capsys)
    assert steady.least_acknowledged() > 20, f"{steady.acknowledged}"
    async with httpx.AsyncClient() as http:
        for hub in hubs:
            assert (await http.get(f"{hub.url}/readyz")).status_code == 200, hub.log_tail()
            assert "redis subscription lost" in hub.log_text(), hub.log_tail()


async def test_a_switchover_with_the_old_primary_alive_loses_nothing(
    sentinels: SentinelProcesses,
    gateway: Gateways,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`SENTINEL FAILOVER`: the old primary turns replica (writes get READONLY) instead of dying."""
    topics = [f"feed-{n}" for n in range(4)]
    hub = gateway({"HUB_RETRY_MS": "400"}, redis_url=sentinels.url)
    clients = await connected([ReconnectingListener(hub.url, [topic]).start() for topic in topics])
    steady = WaitingPublisher(sentinels.url, key_prefix, topics, rate=100, wait_replicas=1)
    publishing = asyncio.create_task(steady.run())
    await steady.wait_acknowledged(20)
    old = sentinels.current_primary()
    with sentinels.sentinels[0].client() as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE_NAME)
    new = await asyncio.to_thread(sentinels.wait_failover, old)
    channel = f"{key_prefix}channel:{{{topics[0]}}}"

    def subscribers() -> int:
        with new.client() as redis:
            return int(redis.pubsub_numsub(channel)[0][1])

    # The Sentinels announce the switch (+switch-master): the gateway moves at once, well
    # before its next periodic check (5 s).
    await asyncio.to_thread(
        wait_until,
        lambda: subscribers() == 1,
        3,
        f"the gateway to move its subscription to the new primary, port {new.port}",
        observe=lambda: f"{subscribers()} subscribers of {channel}",
    )
    # Publishing goes on past the switch. (Until the Sentinels make the old primary a replica
    # of the new one, at their next check up to 10 s later, each publish waits its full
    # HUB_PUBLISH_WAIT_MS for a replica and is refused.)
    await steady.wait_attempted(steady.least_attempted() + 3)
    steady.stop()
    await publishing
    await steady.settle_and_count(clients, "sentinel switchover", capsys)
