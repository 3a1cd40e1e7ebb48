"""Counting every event through a Redis failover: a publisher that waits for replicas, and the tally.

The publisher publishes to many topics at a steady rate and keeps, per topic,
what Redis acknowledged. A publish that fails (its primary died, or
the event did not reach a replica in time) is counted as refused: the
publisher saw an error, so it is never a silent loss; the event may or may
not be delivered. The tally then checks, per topic and per client, that every
acknowledged event arrived exactly once and in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from redis.exceptions import RedisError

from hub.config import Settings
from publisher import AsyncPublisher
from processes import Gateway
from sse_client import ReconnectingListener, connected


@dataclass
class WaitingPublisher:
    redis_url: str
    key_prefix: str
    topics: Sequence[str]
    rate: float = 200.0
    wait_replicas: int = 1
    acknowledged: dict[str, list[str]] = field(default_factory=dict)
    refused: int = 0
    errors: set[str] = field(default_factory=set)

    async def run(self, seconds: float) -> None:
        """Publish for `seconds`: each topic on its own task, so a topic whose primary is
        failing over does not hold the others back."""
        settings = Settings(
            redis_url=self.redis_url,
            key_prefix=self.key_prefix,
            publish_wait_replicas=self.wait_replicas,
            redis_timeout_seconds=2.0,
        )
        self.acknowledged = {topic: [] for topic in self.topics}
        async with AsyncPublisher(settings) as hub:
            started = time.monotonic()
            per_topic = self.rate / len(self.topics)

            async def publish(topic: str) -> None:
                n = 0
                while time.monotonic() - started < seconds:
                    data = f"{topic}#{n}"
                    try:
                        await hub.publish(topic, data)
                        self.acknowledged[topic].append(data)
                    except (RedisError, OSError) as exc:
                        self.refused += 1
                        self.errors.add(type(exc).__name__)
                    n += 1
                    delay = started + n / per_topic - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)

            await asyncio.gather(*(publish(topic) for topic in self.topics))

    @property
    def total(self) -> int:
        return sum(len(events) for events in self.acknowledged.values())


async def listen_everywhere(hubs: Sequence[Gateway], topics: Sequence[str]) -> list[ReconnectingListener]:
    """At every gateway, a client per topic and one client of all topics; all connected."""
    clients = [ReconnectingListener(hub.url, [topic]).start() for hub in hubs for topic in topics]
    clients += [ReconnectingListener(hub.url, topics).start() for hub in hubs]
    return await connected(clients)


@dataclass
class Tally:
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    extra: int = 0
    """Events delivered whose publish failed (the write happened; the acknowledgement did not)."""


def tally(client: ReconnectingListener, acknowledged: dict[str, list[str]]) -> Tally:
    """What one client (of one or several topics) got against what was acknowledged."""
    result = Tally()
    received = client.data
    result.duplicated = len(received) - len(set(received))
    seen = set(received)
    for topic in client.topics:
        expected = acknowledged[topic]
        wanted = set(expected)
        result.lost += sum(1 for data in expected if data not in seen)
        got = [data for data in dict.fromkeys(received) if data.startswith(f"{topic}#")]
        result.extra += sum(1 for data in got if data not in wanted)
        if [data for data in got if data in wanted] != [data for data in expected if data in seen]:
            result.out_of_order += 1
    return result


async def settle_and_tally(
    clients: list[ReconnectingListener],
    publisher: WaitingPublisher,
    label: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Wait until every client has every acknowledged event, then report and check the counts."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(tally(client, publisher.acknowledged).lost == 0 for client in clients):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # a duplicate would arrive now
    tallies = [tally(client, publisher.acknowledged) for client in clients]
    reconnects = sum(client.connections - 1 for client in clients)
    for client in clients:
        await client.close()
    total = Tally(
        *(sum(getattr(t, name) for t in tallies) for name in ("lost", "duplicated", "out_of_order", "extra"))
    )
    with capsys.disabled():
        print(
            f"\n[{label}] {len(clients)} clients, {publisher.total} acknowledged events over "
            f"{len(publisher.topics)} topics, {publisher.refused} publishes refused "
            f"({', '.join(sorted(publisher.errors)) or 'none'}): lost={total.lost} "
            f"duplicated={total.duplicated} out_of_order={total.out_of_order} "
            f"delivered_unacknowledged={total.extra} reconnects={reconnects}"
        )
    assert total.lost == 0 and total.duplicated == 0 and total.out_of_order == 0
