"""What an operator sees: Prometheus metrics and one log line per notable event."""

from __future__ import annotations

import json

import httpx
import pytest
from processes import Gateways
from sse_client import listening, metric, publisher

pytestmark = pytest.mark.anyio


async def test_metrics_count_clients_events_bytes_and_delay(
    gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = gateway()
    async with (
        listening(hub.url, ["news"], count=3) as clients,
        publisher(redis_url, key_prefix) as pub,
    ):
        for n in range(10):
            await pub.publish("news", str(n))
        for client in clients:
            await client.wait_for(10)
        async with httpx.AsyncClient(base_url=hub.url) as http:
            response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric(text, "hub_connected_clients") == 3
    assert metric(text, "hub_events_received_total") == 10
    assert metric(text, "hub_events_sent_total") == 30
    assert metric(text, "hub_bytes_sent_total") > 30 * len("data: 0\n\n")
    assert metric(text, "hub_publish_to_send_seconds_count") == 10
    assert metric(text, 'hub_publish_to_send_seconds_bucket{le="+Inf"}') == 10
    assert metric(text, "hub_redis_subscribed") == 1
    assert metric(text, "hub_redis_primaries") == 1
    for name in (
        "hub_events_replayed_total",
        "hub_slow_client_disconnects_total",
        "hub_redis_reconnects_total",
        "hub_history_reads_total",
        "hub_redis_topic_moves_total",
    ):
        assert metric(text, name) >= 0


async def test_json_logs_are_one_object_per_line(gateway: Gateways) -> None:
    hub = gateway({"HUB_LOG_FORMAT": "json"})
    hub.terminate()
    records = [json.loads(line) for line in hub.log_text().splitlines() if line.startswith("{")]
    events = {record.get("event") for record in records}
    assert {"start", "stop", "redis_up"} <= events
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)


def test_every_figure_a_gateway_reports_is_a_metric() -> None:
    from dataclasses import fields

    from hub.gateway import Figures
    from hub.metrics import COUNTERS, GAUGES

    assert {figure.name for figure in fields(Figures)} == set(GAUGES) | set(COUNTERS)
