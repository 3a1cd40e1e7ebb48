"""Publishing through a Redis failover: a publisher that waits for replicas, and clients everywhere.

The publisher publishes to many topics at a steady rate and keeps, per topic,
what Redis acknowledged. A publish that fails (its primary died, or
the event did not reach a replica in time) is counted as refused: the
publisher saw an error, so it is never a silent loss; the event may or may
not be delivered. `sse_client.settle_and_count` then checks, per topic and per
client, that every acknowledged event arrived exactly once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from processes import Gateway, wait_until_async
from redis.exceptions import RedisError
from sse_client import ReconnectingListener, connected, settle_and_count

from hub.config import Settings
from publisher import AsyncPublisher


@dataclass
class WaitingPublisher:
    redis_url: str
    key_prefix: str
    topics: Sequence[str]
    rate: float = 200.0
    wait_replicas: int = 1
    acknowledged: dict[str, list[str]] = field(default_factory=dict)
    attempted: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    errors: set[str] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, seconds: float | None = None) -> None:
        """Publish for `seconds`, or until stop(): each topic on its own task, so a topic whose
        primary is failing over does not hold the others back."""
        settings = Settings(
            redis_url=self.redis_url,
            key_prefix=self.key_prefix,
            publish_wait_replicas=self.wait_replicas,
            redis_timeout_seconds=2.0,
        )
        self.acknowledged = {topic: [] for topic in self.topics}
        self.attempted = {topic: 0 for topic in self.topics}
        async with AsyncPublisher(settings) as hub:
            started = time.monotonic()
            per_topic = self.rate / len(self.topics)

            def publishing() -> bool:
                return not self._stop.is_set() and (
                    seconds is None or time.monotonic() - started < seconds
                )

            async def publish(topic: str) -> None:
                n = 0
                while publishing():
                    data = f"{topic}#{n}"
                    try:
                        await hub.publish(topic, data)
                        self.acknowledged[topic].append(data)
                    except (RedisError, OSError) as exc:
                        self.refused += 1
                        self.errors.add(type(exc).__name__)
                    n += 1
                    self.attempted[topic] = n
                    delay = started + n / per_topic - time.monotonic()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), delay)

            await asyncio.gather(*(publish(topic) for topic in self.topics))

    def stop(self) -> None:
        self._stop.set()

    @property
    def total(self) -> int:
        return sum(len(events) for events in self.acknowledged.values())

    def least_acknowledged(self) -> int:
        return min((len(events) for events in self.acknowledged.values()), default=0)

    async def wait_acknowledged(self, per_topic: int, within: float = 60.0) -> None:
        """Until at least `per_topic` events of every topic were acknowledged."""
        await wait_until_async(
            lambda: self.acknowledged and self.least_acknowledged() >= per_topic,
            within,
            f"{per_topic} acknowledged events on each of {len(self.topics)} topics",
            observe=lambda: (
                f"{self.least_acknowledged()} on the slowest topic, {self.refused} refused "
                f"({', '.join(sorted(self.errors)) or 'no errors'})"
            ),
        )

    def least_attempted(self) -> int:
        return min(self.attempted.values(), default=0)

    async def wait_attempted(self, per_topic: int, within: float = 60.0) -> None:
        """Until at least `per_topic` publishes of every topic were made, acknowledged or not."""
        await wait_until_async(
            lambda: self.attempted and self.least_attempted() >= per_topic,
            within,
            f"{per_topic} publishes on each of {len(self.topics)} topics",
            observe=lambda: f"{self.least_attempted()} on the slowest topic",
        )

    async def settle_and_count(
        self,
        clients: Sequence[ReconnectingListener],
        label: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Check that every client got every acknowledged event of its topics once, in order."""
        await settle_and_count(
            clients,
            self.acknowledged,
            label,
            capsys,
            redis_url=self.redis_url,
            key_prefix=self.key_prefix,
            refused=self.refused,
            errors=sorted(self.errors),
        )


async def listen_everywhere(
    hubs: Sequence[Gateway], topics: Sequence[str]
) -> list[ReconnectingListener]:
    """At every gateway, a client per topic and one client of all topics; all connected."""
    clients = [ReconnectingListener(hub.url, [topic]).start() for hub in hubs for topic in topics]
    clients += [ReconnectingListener(hub.url, topics).start() for hub in hubs]
    return await connected(clients)
