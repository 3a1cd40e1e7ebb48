"""Faults in the scaled-out topology, each counting every event at every client.

Real Redis, real gateway processes, real nginx in front; the clients behave
like browsers (they reconnect by themselves with `Last-Event-ID`). Each test
prints its counts of lost and duplicated events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from hub.config import Settings
from processes import Gateway, Gateways
from publisher import AsyncPublisher
from sse_client import ReconnectingListener, connected, count_losses
from topology import Nginx

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


@pytest.fixture
def topology(gateway: Gateways, tmp_path: Path, redis_url: str, key_prefix: str) -> Iterator[Callable[..., Topology]]:
    started: list[Nginx] = []

    def make(count: int = 3, *, url: str | None = None, wait_ready: bool = True) -> Topology:
        env = dict(FAST_RECONNECT)
        gateways = [gateway(env, redis_url=url or redis_url, wait_ready=wait_ready) for _ in range(count)]
        nginx = Nginx(tmp_path / f"nginx{len(started)}", gateways).start()
        started.append(nginx)
        return Topology(gateways, nginx, gateway, env, url or redis_url, key_prefix)

    yield make
    for nginx in started:
        nginx.close()


@dataclass
class SteadyPublisher:
    """Publishes numbered events at a steady rate; keeps what Redis acknowledged."""

    redis_url: str
    key_prefix: str
    topic: str = "faults"
    rate: float = 100.0
    first: int = 0
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0

    async def run(self, count: int) -> None:
        settings = Settings(redis_url=self.redis_url, key_prefix=self.key_prefix)
        async with AsyncPublisher(settings) as hub:
            started = time.monotonic()
            for n in range(count):
                data = str(self.first + n)
                try:
                    await hub.publish(self.topic, data)
                    self.acknowledged.append(data)
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    self.refused += 1  # an error the publisher sees: never a silent loss
                delay = started + (n + 1) / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)


async def connect_clients(url: str, count: int, topic: str = "faults") -> list[ReconnectingListener]:
    return await connected([ReconnectingListener(url, [topic]).start() for _ in range(count)])


async def settle_and_count(
    clients: list[ReconnectingListener], expected: list[str], label: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Wait until every client has every event, then report and check the counts."""
    try:
        await asyncio.gather(*(client.wait_for(len(expected), timeout=60) for client in clients))
    except TimeoutError:
        pass
    await asyncio.sleep(0.5)  # a duplicate would arrive now
    totals = [count_losses(expected, client.data) for client in clients]
    lost = sum(t[0] for t in totals)
    duplicated = sum(t[1] for t in totals)
    reconnects = sum(client.connections - 1 for client in clients)
    for client in clients:
        await client.close()
    with capsys.disabled():
        print(
            f"\n[{label}] {len(clients)} clients x {len(expected)} events: "
            f"lost={lost} duplicated={duplicated} out_of_order={sum(not t[2] for t in totals)} "
            f"reconnects={reconnects}"
        )
    assert lost == 0 and duplicated == 0 and all(t[2] for t in totals)


async def test_a_killed_gateway_loses_no_client_any_event(topology, redis_url, key_prefix, capsys) -> None:
    net = topology()
    clients = await connect_clients(net.nginx.url, 30)
    steady = SteadyPublisher(redis_url, key_prefix)
    publishing = asyncio.create_task(steady.run(500))
    await asyncio.sleep(1.5)
    net.gateways[0].kill()
    await publishing
    await settle_and_count(clients, steady.acknowledged, "gateway SIGKILL", capsys)
    assert steady.refused == 0
    assert sum(client.connections for client in clients) > len(clients), "some clients had to move"


async def test_a_rolling_restart_loses_and_repeats_nothing(topology, redis_url, key_prefix, capsys) -> None:
    net = topology()
    clients = await connect_clients(net.nginx.url, 30)
    steady = SteadyPublisher(redis_url, key_prefix)
    publishing = asyncio.create_task(steady.run(700))
    for index in range(len(net.gateways)):
        await asyncio.sleep(0.8)
        code = await asyncio.to_thread(net.gateways[index].terminate, 10)
        assert code == 0
        await asyncio.to_thread(net.replace, index)
    await publishing
    await settle_and_count(clients, steady.acknowledged, "rolling restart", capsys)
    assert sum(client.connections for client in clients) > len(clients) + 20, "clients moved"


async def test_a_redis_restart_is_survived_with_a_backfill(topology, private_redis, key_prefix, capsys) -> None:
    server = private_redis(persistent=True)
    net = topology(url=server.url)
    clients = await connect_clients(net.nginx.url, 20)
    steady = SteadyPublisher(server.url, key_prefix, rate=50)
    publishing = asyncio.create_task(steady.run(300))
    await asyncio.sleep(1.5)
    server.kill()
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 10
        while (await http.get(f"{net.gateways[0].url}/readyz")).status_code != 503:
            assert time.monotonic() < deadline, "readyz kept saying ready with Redis down"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)
        deadline = time.monotonic() + 20
        for gateway in net.gateways:
            while (await http.get(f"{gateway.url}/readyz")).status_code != 200:
                assert time.monotonic() < deadline, gateway.log_tail()
                await asyncio.sleep(0.1)
    await publishing
    assert steady.refused > 0, "publishing while Redis was down failed loudly"
    await settle_and_count(clients, steady.acknowledged, "redis restart", capsys)
    assert all("redis subscription lost" in gateway.log_text() for gateway in net.gateways)


async def test_a_gateway_starts_without_redis_and_serves_once_it_answers(gateway, private_redis, key_prefix) -> None:
    server = private_redis()
    server.stop()
    hub = gateway(FAST_RECONNECT, redis_url=server.url)
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503 and "redis" in not_ready.text
        early = await http.get("/events", params={"topic": "faults"})
        assert early.status_code == 200 and early.headers["hub-unavailable"] == "redis"
        assert "retry:" in early.text, "a browser is told to come back"
        await asyncio.to_thread(server.start)
        deadline = time.monotonic() + 20
        while (await http.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, hub.log_tail()
            await asyncio.sleep(0.1)
    [client] = await connect_clients(hub.url, 1)
    steady = SteadyPublisher(server.url, key_prefix)
    await steady.run(20)
    await client.wait_for(20)
    await client.close()
    assert client.data == steady.acknowledged


async def test_a_reconnect_storm_is_absorbed_with_shared_history_reads(
    topology, redis_url, key_prefix, capsys
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
    await asyncio.gather(*(client.wait_for(len(expected), timeout=60) for client in clients))
    caught_up = time.monotonic() - started
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{survivor.url}/metrics")).text
    reads = float(next(line.split()[1] for line in metrics.splitlines()
                        if line.startswith("hub_history_reads_total")))
    moved = sum(1 for client in clients if client.connections > 1)
    with capsys.disabled():
        print(f"\n[reconnect storm] {moved} clients moved to the survivor; all {len(clients)} caught up "
              f"{caught_up:.2f} s after the kill; history reads on the survivor: {reads:.0f}")
    await settle_and_count(clients, expected, "reconnect storm", capsys)
    assert moved > 40
    assert reads < moved, "history reads are shared between clients resuming from the same cursor"
