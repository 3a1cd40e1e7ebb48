"""Faults in the scaled-out topology, each counting every event at every client.

Real Redis, real gateway processes, real nginx in front; the clients behave
like browsers (they reconnect by themselves with `Last-Event-ID`). Each test
prints its counts of lost and duplicated events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from processes import Gateway, Gateways, Nginx, RedisServers, wait_until_async
from sse_client import ReconnectingListener, connected, metric, settle_and_count

from hub.config import Settings
from publisher import AsyncPublisher

pytestmark = pytest.mark.anyio

FAST_RECONNECT = {"HUB_RETRY_MS": "400", "HUB_SHUTDOWN_SECONDS": "5", "HUB_HEARTBEAT_SECONDS": "2"}


@dataclass
class Topology:
    gateways: list[Gateway]
    nginx: Nginx
    factory: Gateways
    env: dict[str, str]
    redis_url: str
    key_prefix: str

    def replace(self, index: int) -> Gateway:
        """Start a gateway again on the port of the one at `index` (which has stopped)."""
        old = self.gateways[index]
        new = self.factory(self.env, redis_url=self.redis_url, port=old.port)
        self.gateways[index] = new
        return new


MakeTopology = Callable[..., Topology]
"""`topology(count=3, *, url=None)`: gateways on one Redis, nginx in front of them."""


@pytest.fixture
def topology(
    gateway: Gateways, tmp_path: Path, redis_url: str, key_prefix: str
) -> Iterator[MakeTopology]:
    started: list[Nginx] = []

    def make(count: int = 3, *, url: str | None = None) -> Topology:
        env = dict(FAST_RECONNECT)
        gateways = gateway.many(count, env, redis_url=url or redis_url)
        nginx = Nginx(tmp_path / f"nginx{len(started)}", gateways).start()
        started.append(nginx)
        return Topology(gateways, nginx, gateway, env, url or redis_url, key_prefix)

    yield make
    for nginx in started:
        nginx.close()


@dataclass
class SteadyPublisher:
    """Publishes numbered events (`<topic>#<n>`) at a steady rate; keeps what Redis acknowledged."""

    redis_url: str
    key_prefix: str
    topic: str = "faults"
    rate: float = 100.0
    first: int = 0
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0
    errors: set[str] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, count: int | None = None) -> None:
        """Publish `count` events, or until stop()."""
        settings = Settings(redis_url=self.redis_url, key_prefix=self.key_prefix)
        async with AsyncPublisher(settings) as hub:
            started = time.monotonic()
            n = 0
            while (count is None or n < count) and not self._stop.is_set():
                data = f"{self.topic}#{self.first + n}"
                try:
                    await hub.publish(self.topic, data)
                    self.acknowledged.append(data)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    self.refused += 1  # an error the publisher sees: never a silent loss
                    self.errors.add(type(exc).__name__)
                n += 1
                delay = started + n / self.rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)

    def stop(self) -> None:
        self._stop.set()

    async def wait_acknowledged(self, count: int, within: float = 30.0) -> None:
        await wait_until_async(
            lambda: len(self.acknowledged) >= count,
            within,
            f"{count} acknowledged events",
            observe=lambda: f"{len(self.acknowledged)} acknowledged, {self.refused} refused",
        )

    async def settle_and_count(
        self,
        clients: list[ReconnectingListener],
        label: str,
        capsys: pytest.CaptureFixture[str],
        *also: SteadyPublisher,
    ) -> None:
        """Every client got every event acknowledged (here, then in `also`) once, in order."""
        acknowledged = self.acknowledged + [data for other in also for data in other.acknowledged]
        await settle_and_count(
            clients,
            {self.topic: acknowledged},
            label,
            capsys,
            redis_url=self.redis_url,
            key_prefix=self.key_prefix,
            refused=self.refused + sum(other.refused for other in also),
            errors=sorted(self.errors.union(*(other.errors for other in also))),
        )


async def connect_clients(
    url: str, count: int, topic: str = "faults"
) -> list[ReconnectingListener]:
    return await connected([ReconnectingListener(url, [topic]).start() for _ in range(count)])


def number(data: str) -> int:
    return int(data.rpartition("#")[2])


async def publish_until_everyone_is_past(
    steady: SteadyPublisher,
    clients: list[ReconnectingListener],
    more: int = 30,
    within: float = 30.0,
) -> None:
    """Go on publishing until every client received `more` events published from now on: a
    client cut off by a fault is back (or never left), and receiving; then stop publishing.

    Fails when no further client gets there for `within` s."""
    mark = steady.first + len(steady.acknowledged) + steady.refused + more

    def past(client: ReconnectingListener) -> bool:
        return bool(client.data) and number(client.data[-1]) >= mark

    await wait_until_async(
        lambda: all(past(client) for client in clients),
        within,
        f"every client to receive event {mark} (publishing goes on meanwhile)",
        observe=lambda: (
            f"{sum(not past(c) for c in clients)} clients are not there; "
            f"{len(steady.acknowledged)} acknowledged, {steady.refused} refused"
        ),
        progress=lambda: sum(past(client) for client in clients),
    )
    steady.stop()


async def readyz_is(http: httpx.AsyncClient, gateway: Gateway, status: int) -> bool:
    return (await http.get(f"{gateway.url}/readyz")).status_code == status


async def test_a_killed_gateway_loses_no_client_any_event(
    topology: MakeTopology, redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    net = topology()
    clients = await connect_clients(net.nginx.url, 30)
    steady = SteadyPublisher(redis_url, key_prefix)
    publishing = asyncio.create_task(steady.run())
    await steady.wait_acknowledged(50)  # the clients are receiving when their gateway dies
    net.gateways[0].kill()
    await publish_until_everyone_is_past(steady, clients)
    await publishing
    await steady.settle_and_count(clients, "gateway SIGKILL", capsys)
    assert steady.refused == 0, f"{steady.refused} publishes refused with Redis up"
    moved = sum(client.connections for client in clients) - len(clients)
    assert moved > 0, "some clients had to move"


async def test_a_rolling_restart_loses_and_repeats_nothing(
    topology: MakeTopology, redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    net = topology()
    clients = await connect_clients(net.nginx.url, 30)
    steady = SteadyPublisher(redis_url, key_prefix)
    publishing = asyncio.create_task(steady.run())
    for index in range(len(net.gateways)):
        await steady.wait_acknowledged(len(steady.acknowledged) + 30)  # publishing, and received
        code = await asyncio.to_thread(net.gateways[index].terminate, 10)
        assert code == 0, (
            f"gateway {index} exited with {code} on SIGTERM:\n{net.gateways[index].log_tail()}"
        )
        await asyncio.to_thread(net.replace, index)
    await publish_until_everyone_is_past(steady, clients)
    await publishing
    await steady.settle_and_count(clients, "rolling restart", capsys)
    moved = sum(client.connections for client in clients) - len(clients)
    assert moved > 20, f"only {moved} reconnections while every gateway restarted"


async def test_a_redis_restart_is_survived_with_a_backfill(
    topology: MakeTopology,
    private_redis: RedisServers,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = private_redis(persistent=True)
    net = topology(url=server.url)
    clients = await connect_clients(net.nginx.url, 20)
    steady = SteadyPublisher(server.url, key_prefix, rate=50)
    publishing = asyncio.create_task(steady.run())
    await steady.wait_acknowledged(25)
    server.kill()
    async with httpx.AsyncClient() as http:
        await wait_until_async(
            lambda: readyz_is(http, net.gateways[0], 503),
            10,
            "readyz to say 503 with Redis down",
            observe=net.gateways[0].log_tail,
        )
        # Redis stays down until publishing has failed loudly.
        await wait_until_async(
            lambda: steady.refused,
            20,
            "a publish refused with Redis down",
            observe=lambda: f"{len(steady.acknowledged)} acknowledged",
        )
        await asyncio.to_thread(server.start)
        for gateway in net.gateways:
            await wait_until_async(
                functools.partial(readyz_is, http, gateway, 200),
                20,
                f"readyz of {gateway.url} to say 200 after Redis is back",
                observe=gateway.log_tail,
            )
    await publish_until_everyone_is_past(steady, clients)
    await publishing
    await steady.settle_and_count(clients, "redis restart", capsys)
    for gateway in net.gateways:
        assert "redis subscription lost" in gateway.log_text(), gateway.log_tail()


async def test_a_gateway_starts_without_redis_and_serves_once_it_answers(
    gateway: Gateways, private_redis: RedisServers, key_prefix: str
) -> None:
    server = private_redis()
    server.stop()
    # A stream asked for while Redis is down is answered once the gateway gave up reaching
    # it, after HUB_REDIS_TIMEOUT_SECONDS (5 s by default).
    hub = gateway({**FAST_RECONNECT, "HUB_REDIS_TIMEOUT_SECONDS": "1"}, redis_url=server.url)
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503 and "redis" in not_ready.text, not_ready.text
        early = await http.get("/events", params={"topic": "faults"})
        assert early.status_code == 200 and early.headers["hub-unavailable"] == "redis", (
            early.headers
        )
        assert "retry:" in early.text, f"a browser is told to come back: {early.text!r}"
        # HEAD says the same at once, without waiting on Redis.
        asked = await http.head("/events", params={"topic": "faults"})
        assert asked.headers.get("hub-unavailable") == "redis", asked.headers
        await asyncio.to_thread(server.start)
        await wait_until_async(
            lambda: readyz_is(http, hub, 200),
            20,
            "readyz to say 200 once Redis answers",
            observe=hub.log_tail,
        )
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        asked = await http.head("/events", params={"topic": "faults"})
        assert asked.status_code == 200 and "hub-unavailable" not in asked.headers, asked.headers
    [client] = await connect_clients(hub.url, 1)
    steady = SteadyPublisher(server.url, key_prefix)
    await steady.run(20)
    await client.wait_for(20)
    await client.close()
    assert client.data == steady.acknowledged


async def test_a_reconnect_storm_is_absorbed_with_shared_history_reads(
    topology: MakeTopology, redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    net = topology(2)
    clients = await connect_clients(net.nginx.url, 160)
    steady = SteadyPublisher(redis_url, key_prefix, rate=200)
    await steady.run(100)
    await asyncio.gather(*(client.wait_for(100) for client in clients))
    survivor = net.gateways[1]
    net.gateways[0].kill()
    missed = SteadyPublisher(redis_url, key_prefix, rate=2000, first=100)
    started = time.monotonic()
    await missed.run(500)
    expected = steady.acknowledged + missed.acknowledged
    await asyncio.gather(*(client.wait_for(len(expected), within=60) for client in clients))
    caught_up = time.monotonic() - started
    async with httpx.AsyncClient() as http:
        reads = metric((await http.get(f"{survivor.url}/metrics")).text, "hub_history_reads_total")
    moved = sum(1 for client in clients if client.connections > 1)
    with capsys.disabled():
        print(
            f"\n[reconnect storm] {moved} clients moved to the survivor; "
            f"all {len(clients)} caught up "
            f"{caught_up:.2f} s after the kill; history reads on the survivor: {reads:.0f}"
        )
    await steady.settle_and_count(clients, "reconnect storm", capsys, missed)
    assert moved > 40, f"only {moved} of {len(clients)} clients moved to the survivor"
    assert reads < moved, (
        f"{reads:.0f} history reads for {moved} clients: reads are shared between clients resuming "
        "from the same cursor"
    )
