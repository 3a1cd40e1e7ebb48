"""`GET /metrics`: the gateway's counters in the Prometheus text format.

The hot path only bumps plain integers; they are read when Prometheus
scrapes. The one histogram, the delay from publish to send, is observed once
per event (an event's ID is Redis's clock when it was published), not once
per client, into a plain list of counts: the client library's `Histogram`
takes a lock per observation, which costs more than the rest of an event's
bookkeeping.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from hub.events import Event

if TYPE_CHECKING:
    from hub.gateway import Figures

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DelayHistogram(Collector):
    """`hub_publish_to_send_seconds`: delays counted per bucket, exported on scrape."""

    NAME = "hub_publish_to_send_seconds"
    HELP = "Delay from an event's publication to its hand-off to this gateway's clients."

    def __init__(self) -> None:
        self._counts = [0] * (len(DELAY_BUCKETS) + 1)  # the last one: over every bound
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(DELAY_BUCKETS, seconds)] += 1
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        buckets, total = [], 0
        for bound, count in zip((*map(str, DELAY_BUCKETS), "+Inf"), self._counts, strict=True):
            total += count
            buckets.append((bound, total))
        yield HistogramMetricFamily(self.NAME, self.HELP, buckets=buckets, sum_value=self._sum)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._delay = DelayHistogram()
        self.registry.register(self._delay)

    def observe_delivery(self, event: Event) -> None:
        self.observe_delay(event.id[0])

    def observe_delay(self, published_ms: int) -> None:
        """An event published at `published_ms` (its ID's milliseconds) goes out now."""
        self._delay.observe(max(0.0, time.time() - published_ms / 1000))

    def watch(self, figures: Callable[[], Figures]) -> None:
        self.registry.register(_GatewayCollector(figures))

    def render(self) -> bytes:
        return generate_latest(self.registry)


GAUGES = {
    "connected_clients": ("hub_connected_clients", "Open SSE streams."),
    "topics": ("hub_topics", "Topics this gateway is subscribed to."),
    "redis_subscribed": ("hub_redis_subscribed", "1 while the Redis subscription is up."),
    "redis_primaries": (
        "hub_redis_primaries",
        "Redis primaries this gateway's subscription is connected to.",
    ),
}
COUNTERS = {
    "events_received": ("hub_events_received", "Events received from Redis pub/sub."),
    "events_sent": ("hub_events_sent", "Live event frames handed to clients."),
    "events_replayed": ("hub_events_replayed", "Event frames replayed from history."),
    "bytes_sent": ("hub_bytes_sent", "Bytes written to clients."),
    "gaps_filled": (
        "hub_gaps_filled",
        "Times a topic's live feed had a gap and was filled from its stream.",
    ),
    "history_reads": ("hub_history_reads", "Reads of stream history (shared between clients)."),
    "slow_client_disconnects": (
        "hub_slow_client_disconnects",
        "Clients dropped for falling behind.",
    ),
    "redis_reconnects": (
        "hub_redis_reconnects",
        "Times a Redis subscription connection was lost and made again.",
    ),
    "redis_topic_moves": (
        "hub_redis_topic_moves",
        "Times a topic's subscription moved to another primary (failover, slot migration).",
    ),
    "malformed_entries_skipped": (
        "hub_malformed_entries_skipped",
        "Stream entries or messages the gateway could not decode, skipped (each read of one "
        "counts).",
    ),
}


class _GatewayCollector(Collector):
    def __init__(self, figures: Callable[[], Figures]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        figures = self.figures()
        for field, (name, help) in GAUGES.items():
            yield GaugeMetricFamily(name, help, value=int(getattr(figures, field)))
        for field, (name, help) in COUNTERS.items():
            yield CounterMetricFamily(name, help, value=getattr(figures, field))
