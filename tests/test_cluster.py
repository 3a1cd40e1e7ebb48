"""The hub on a Redis Cluster: sharded pub/sub, replay from each slot's node, failover.

A real cluster of `redis-server` processes (three primaries, a replica each,
made by `redis-cli --cluster create`), real gateway processes, and topics
spread over every primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from failover import WaitingPublisher, listen_everywhere
from processes import ClusterProcesses, Gateways, RedisServer, wait_until
from redis.crc import key_slot
from sse_client import Listener, ReconnectingListener, connected, metric, publisher

from hub.acl import gateway_rules, publisher_rules, setuser
from hub.mercure.record import partition_topic
from hub.topics import Keys

pytestmark = pytest.mark.anyio


@pytest.fixture
def cluster() -> Iterator[ClusterProcesses]:
    with ClusterProcesses(primaries=3, replicas=1) as started:
        yield started


def spread_topics(
    cluster: ClusterProcesses, key_prefix: str, per_primary: int
) -> dict[int, list[str]]:
    """Topic names, `per_primary` owned by each primary, keyed by the primary's port."""
    keys = Keys(key_prefix)
    owned: dict[int, list[str]] = {}
    n = 0
    while len(owned) < 3 or min(len(topics) for topics in owned.values()) < per_primary:
        topic = f"topic-{n}"
        port = cluster.primary_of(keys.stream(topic)).port
        if len(owned.setdefault(port, [])) < per_primary:
            owned[port].append(topic)
        n += 1
    return owned


def pubsub_connections(server: RedisServer) -> int:
    with server.client() as client:
        return sum(1 for entry in client.client_list() if "P" in entry["flags"])


async def test_events_on_every_primary_reach_their_clients(
    cluster: ClusterProcesses, gateway: Gateways, key_prefix: str
) -> None:
    owned = spread_topics(cluster, key_prefix, per_primary=3)
    topics = [topic for names in owned.values() for topic in names]
    hub = gateway(redis_url=cluster.url)
    clients = [Listener(hub.url, [topic]).start() for topic in topics]
    everything = Listener(hub.url, topics).start()
    for client in [*clients, everything]:
        await client.wait_connected()
    async with publisher(cluster.url, key_prefix) as pub:
        for round in range(5):
            for topic in topics:
                await pub.publish(topic, f"{topic} {round}")
    for client, topic in zip(clients, topics, strict=True):
        await client.wait_for(5)
        assert client.data == [f"{topic} {round}" for round in range(5)]
    await everything.wait_for(5 * len(topics))
    assert sorted(everything.data) == sorted(f"{t} {r}" for t in topics for r in range(5))

    keys = Keys(key_prefix)
    for port, names in owned.items():
        primary = next(s for s in cluster.servers if s.port == port)
        with primary.client() as client:
            counts = dict(client.pubsub_shardnumsub(*(keys.channel(t) for t in names)))
        assert set(counts.values()) == {1}, "each topic subscribed on the primary that owns it"
        assert pubsub_connections(primary) == 1, "one connection per primary, not per topic"
    for client in [*clients, everything]:
        await client.close()


async def test_a_client_resumes_topics_of_several_primaries_on_another_gateway(
    cluster: ClusterProcesses, gateway: Gateways, key_prefix: str
) -> None:
    topics = [names[0] for names in spread_topics(cluster, key_prefix, per_primary=1).values()]
    first, second = gateway(redis_url=cluster.url), gateway(redis_url=cluster.url)
    client = Listener(first.url, topics).start()
    await client.wait_connected()
    async with publisher(cluster.url, key_prefix) as pub:
        for topic in topics:
            await pub.publish(topic, f"{topic} before")
        await client.wait_for(3)
        await client.close()
        for topic in topics:
            await pub.publish(topic, f"{topic} missed")
    resumed = Listener(second.url, topics, last_event_id=client.cursor).start()
    await resumed.wait_for(3)
    assert sorted(resumed.data) == sorted(f"{topic} missed" for topic in topics)
    await resumed.close()


@pytest.mark.parametrize("fault", ["killed", "frozen"])
async def test_a_primary_fails_over_mid_stream_and_no_acknowledged_event_is_lost(
    fault: str,
    cluster: ClusterProcesses,
    gateway: Gateways,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A primary dies (SIGKILL) or hangs with its sockets open (SIGSTOP) mid-stream."""
    owned = spread_topics(cluster, key_prefix, per_primary=10)
    topics = [topic for names in owned.values() for topic in names]
    env = {"HUB_RETRY_MS": "400", "HUB_REDIS_TIMEOUT_SECONDS": "2"}
    hubs = [gateway(env, redis_url=cluster.url) for _ in range(2)]
    clients = await listen_everywhere(hubs, topics)

    steady = WaitingPublisher(cluster.url, key_prefix, topics, rate=300, wait_replicas=1)
    publishing = asyncio.create_task(steady.run())
    await steady.wait_acknowledged(10)  # mid-stream: every topic has events out before the fault
    victim = next(s for s in cluster.servers if s.port == next(iter(owned)))
    victim.kill() if fault == "killed" else victim.freeze()
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.wait_failover, victim)
    took_over = time.monotonic() - killed_at
    # Back (empty, if it was killed), it rejoins as the replica of its successor, so
    # waiting for a replica works again.
    await asyncio.to_thread(victim.start if fault == "killed" else victim.thaw)
    await asyncio.to_thread(cluster.wait_healthy)
    # Publishing goes on after the recovery: 10 more events on every topic, the moved ones too.
    await steady.wait_acknowledged(steady.least_acknowledged() + 10)
    steady.stop()
    await publishing
    with capsys.disabled():
        print(f"\n[cluster failover, primary {fault}] a replica took over {took_over:.1f} s after")
    keys = Keys(key_prefix)
    for topic in owned[victim.port]:
        assert cluster.primary_of(keys.stream(topic)).port != victim.port, (
            f"{topic} still on the victim"
        )
    await steady.settle_and_count(clients, f"cluster failover, primary {fault}", capsys)
    assert steady.least_acknowledged() > 10, f"{steady.acknowledged}"
    async with httpx.AsyncClient() as http:
        for hub in hubs:
            assert f"redis node 127.0.0.1:{victim.port} is no longer a primary" in hub.log_text(), (
                hub.log_tail()
            )
            text = (await http.get(f"{hub.url}/metrics")).text
            assert metric(text, "hub_redis_primaries") == 3, text
            assert metric(text, "hub_redis_topic_moves_total") >= len(owned[victim.port]), text


async def test_a_topic_whose_slot_migrates_keeps_its_events_in_order(
    cluster: ClusterProcesses,
    gateway: Gateways,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    owned = spread_topics(cluster, key_prefix, per_primary=1)
    topic = owned[next(iter(owned))][0]
    keys = Keys(key_prefix)
    hub = gateway(redis_url=cluster.url)
    clients = await connected([ReconnectingListener(hub.url, [topic]).start() for _ in range(3)])
    steady = WaitingPublisher(cluster.url, key_prefix, [topic], rate=100, wait_replicas=1)
    publishing = asyncio.create_task(steady.run())
    await steady.wait_acknowledged(20)
    source = cluster.primary_of(keys.stream(topic))
    target = next(s for s in cluster.servers if s.port in owned and s is not source)
    await asyncio.to_thread(migrate_slot, source, target, keys.stream(topic))
    await steady.wait_acknowledged(steady.least_acknowledged() + 20)  # and on, after the move
    steady.stop()
    await publishing
    assert asked(target) > 0, "publishes during the migration were sent on with ASKING"
    assert cluster.primary_of(keys.stream(topic)) is target
    for server, subscribed in ((source, 0), (target, 1)):
        with server.client() as client:
            assert dict(client.pubsub_shardnumsub(keys.channel(topic))) == {
                keys.channel(topic).encode(): subscribed
            }, "the gateway followed the slot"
    await steady.settle_and_count(clients, "slot migration", capsys)


async def test_a_manual_failover_moves_subscriptions_off_the_demoted_primary(
    cluster: ClusterProcesses,
    gateway: Gateways,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`CLUSTER FAILOVER`: the old primary lives on as a replica and drops its shard channels."""
    owned = spread_topics(cluster, key_prefix, per_primary=2)
    old_port = next(iter(owned))
    topics = owned[old_port]
    keys = Keys(key_prefix)
    hub = gateway(redis_url=cluster.url)
    clients = await connected(
        [ReconnectingListener(hub.url, [topic]).start() for topic in topics for _ in range(2)]
    )
    steady = WaitingPublisher(cluster.url, key_prefix, topics, rate=100, wait_replicas=1)
    publishing = asyncio.create_task(steady.run())
    await steady.wait_acknowledged(20)
    old = next(s for s in cluster.servers if s.port == old_port)
    replica = cluster.replica_of(old)
    with replica.client() as client:
        client.execute_command("CLUSTER FAILOVER")
    await asyncio.to_thread(
        wait_until,
        lambda: cluster.primary_of(keys.stream(topics[0])) is replica,
        30,
        f"port {replica.port} to take over from port {old_port}",
    )

    def subscribed_on_replica() -> dict[bytes, int]:
        with replica.client() as client:
            return dict(client.pubsub_shardnumsub(*(keys.channel(t) for t in topics)))

    await asyncio.to_thread(
        wait_until,
        lambda: set(subscribed_on_replica().values()) == {1},
        10,
        "the gateway to subscribe on the promoted replica",
        observe=subscribed_on_replica,
    )
    await steady.wait_acknowledged(steady.least_acknowledged() + 20)  # and on, after the switch
    steady.stop()
    await publishing
    await steady.settle_and_count(clients, "cluster manual failover", capsys)


def asked(server: RedisServer) -> int:
    """How many ASKING commands `server` has had (a client sent on by an ASK redirection)."""
    with server.client() as client:
        return int(client.info("commandstats").get("cmdstat_asking", {}).get("calls", 0))


def migrate_slot(source: RedisServer, target: RedisServer, key: str) -> None:
    """Move `key`'s slot from `source` to `target` the way `redis-cli --cluster reshard` does."""
    with source.client() as src, target.client() as dst:
        slot = int(src.execute_command("CLUSTER KEYSLOT", key))
        source_id = src.execute_command("CLUSTER MYID").decode()
        target_id = dst.execute_command("CLUSTER MYID").decode()
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        # The stream has moved, the slot not yet: publishes are answered with ASK until then.
        wait_until(
            lambda: asked(target) >= 3,
            10,
            f"publishes sent to port {target.port} with ASKING",
            observe=lambda: f"{asked(target)} ASKING calls",
        )
        for client in (dst, src):
            client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)


async def test_least_privilege_users_work_on_a_cluster(
    cluster: ClusterProcesses, gateway: Gateways, key_prefix: str
) -> None:
    """The ACL users of `python -m hub.acl`, set on every node, are enough for sharded pub/sub."""
    for server in cluster.servers:  # ACLs are per node and not replicated: replicas need them too
        with server.client() as admin:
            admin.execute_command(*setuser("hub-gateway", "gw-pw", gateway_rules(key_prefix)))
            admin.execute_command(*setuser("hub-publisher", "pub-pw", publisher_rules(key_prefix)))
    nodes = cluster.url.removeprefix("redis+cluster://")
    topics = [names[0] for names in spread_topics(cluster, key_prefix, per_primary=1).values()]
    hub = gateway(redis_url=f"redis+cluster://hub-gateway:gw-pw@{nodes}")
    publishing = f"redis+cluster://hub-publisher:pub-pw@{nodes}"
    async with publisher(publishing, key_prefix, publish_wait_replicas=1) as pub:
        first = [await pub.publish(topic, "before") for topic in topics]
        clients = [Listener(hub.url, [topic]).start() for topic in topics]
        resumed = [
            Listener(hub.url, [t], last_event_id=i).start()
            for t, i in zip(topics, first, strict=True)
        ]
        for client in [*clients, *resumed]:
            await client.wait_connected()
        for topic in topics:
            await pub.publish(topic, "live")
    for client in [*clients, *resumed]:
        await client.wait_for(1)
        assert client.data == ["live"]
        await client.close()


async def test_mercure_updates_spread_over_the_primaries_and_resume_exactly(
    cluster: ClusterProcesses, gateway: Gateways, key_prefix: str
) -> None:
    """Mercure's partitions live on every primary; one order still holds across them, and
    an IRI with braces is a native topic whose stream and channel share a slot."""
    env = {"HUB_PUBLISH_TOKEN": "cluster-token", "HUB_MERCURE_SUBSCRIPTIONS": "off"}
    first, second = gateway(env, redis_url=cluster.url), gateway(env, redis_url=cluster.url)
    keys = Keys(key_prefix)
    slots = [key_slot(keys.stream(partition_topic(p)).encode()) for p in range(16)]
    owners = set()
    for primary in cluster.servers:
        with primary.client() as client:
            if any(_owns(client, slot) for slot in slots):
                owners.add(primary.port)
    assert len(owners) == 3, "the partitions are spread over every primary"

    query = [("matchURLPattern", "https://example.com/books/:id")]
    listener = Listener(first.url, [], path="/.well-known/mercure", query=query).start()
    await listener.wait_connected()
    acknowledged = []
    async with httpx.AsyncClient(base_url=first.url) as http:
        for n in range(60):
            response = await http.post(
                "/.well-known/mercure",
                data={"topic": f"https://example.com/books/{n % 13}", "data": f"u{n}"},
                headers={"Authorization": "Bearer cluster-token"},
            )
            assert response.status_code == 200, response.text
            acknowledged.append((response.text, f"u{n}"))
    await listener.wait_for(60, any_type=True)
    assert [(e.id, e.data) for e in listener.events] == acknowledged
    resumed = Listener(
        second.url, [], acknowledged[29][0], path="/.well-known/mercure", query=query
    ).start()
    await resumed.wait_for(30, any_type=True)
    await asyncio.sleep(0.3)
    assert [(e.id, e.data) for e in resumed.events] == acknowledged[30:]

    braces = "urn:example:{weird}%7D"
    native = Listener(first.url, [braces]).start()
    await native.wait_connected()
    async with publisher(cluster.url, key_prefix) as pub:
        await pub.publish(braces, "native IRI")
    await native.wait_for(1)
    assert native.data == ["native IRI"]
    for client in (listener, resumed, native):
        await client.close()


def _owns(client: redis.Redis, slot: int) -> bool:
    """Whether the node `client` talks to serves `slot` as a primary."""
    myself = _text(client.cluster("MYID"))
    for start, end, primary, *_ in client.cluster("SLOTS"):
        if start <= slot <= end:
            return _text(primary[2]) == myself
    return False


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
