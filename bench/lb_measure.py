"""One measurement of the load-balancer comparison: N streams through nginx in one protocol,
a fixed rate of events to their topic, and what it cost nginx and the gateway per delivery."""

from __future__ import annotations

import http.client
import json
import math
import time
from dataclasses import dataclass
from typing import IO, Any

from h2load import H2Load, command
from lb_nginx import LoadBalancer
from native import BenchError
from procstat import cpu_seconds, rss_bytes
from systems import Endpoint

from hub.config import Settings
from hub.sse import event_body
from publisher.client import Publisher
from tests.processes import wait_until

TOPIC = "b0"
CONNECTS_PER_SECOND = 500
"""With Plan.connect_seconds, the time allowed for every stream to open."""


@dataclass(frozen=True)
class Protocol:
    key: str
    label: str
    tls: bool
    http2: bool
    multiplexed: bool  # HTTP/2 with Plan.streams streams per connection (else one)

    def layout(self, plan: Plan) -> tuple[int, int]:
        """(connections, streams per connection) for the plan's clients."""
        if not self.multiplexed:
            return plan.clients, 1
        streams = min(plan.streams, plan.clients)
        return plan.clients // streams, streams


@dataclass(frozen=True)
class Plan:
    clients: int = 1000
    rate: float = 50.0  # events/s to the one topic
    duration: float = 8.0  # seconds of publishing per measurement
    streams: int = 100  # HTTP/2 streams per connection (nginx allows 128)
    rounds: int = 5  # each protocol measured this many times, the protocols taking turns
    protocols: tuple[str, ...] = ("h1", "h1-tls", "h2-tls", "h2-tls-1")
    # h2load's duration is fixed when it starts: these bound the parts around the publishing,
    # and h2load idles out what they leave unused
    connect_seconds: float = 2.0  # plus clients / CONNECTS_PER_SECOND for every stream to open
    drain_seconds: float = 3.0  # after the last publish, for every event to reach every client

    @property
    def events(self) -> int:
        return max(1, round(self.rate * self.duration))

    @property
    def connect_budget(self) -> float:
        return self.connect_seconds + self.clients / CONNECTS_PER_SECOND


@dataclass(frozen=True)
class Counters:
    """The gateway's own figures, from its /metrics."""

    connected: int
    events_sent: int  # event frames handed to streams: deliveries
    bytes_sent: int  # response bytes written to streams


def gateway_counters(port: int) -> Counters:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("hub_connected_clients", "hub_events_sent_total", "hub_bytes_sent_total"):
            values[name] = int(float(value))
    return Counters(
        values["hub_connected_clients"],
        values["hub_events_sent_total"],
        values["hub_bytes_sent_total"],
    )


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def bytes_in_flight(ports: set[int]) -> int:
    """Bytes queued in the kernel (unsent or unread) on the established TCP connections to or
    from `ports`: 0 once the gateway, nginx and h2load have passed everything on."""
    queued = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] != "01":  # ESTABLISHED (a listener's queues count connections)
                continue
            if _port(fields[1]) in ports or _port(fields[2]) in ports:
                tx, rx = fields[4].split(":")
                queued += int(tx, 16) + int(rx, 16)
    return queued


class Quiet:
    """True once nothing moves: no byte in flight between the gateway, nginx and h2load, and
    the gateway's bytes written unchanged since the last look."""

    def __init__(self, gateway_port: int, ports: set[int]) -> None:
        self.gateway_port = gateway_port
        self.ports = ports
        self.last_bytes = -1

    def __call__(self) -> bool:
        written = gateway_counters(self.gateway_port).bytes_sent
        still = written == self.last_bytes
        self.last_bytes = written
        return still and bytes_in_flight(self.ports) == 0


def publish_at_rate(redis_url: str, prefix: str, events: int, rate: float) -> list[bytes]:
    """Publish `events` events to the topic, `rate` per second on a schedule; each event's
    frame as the gateway writes it on a one-topic stream."""
    frames = []
    with Publisher(Settings(redis_url=redis_url, key_prefix=prefix)) as pub:
        start = time.monotonic()
        for seq in range(1, events + 1):
            delay = start + (seq - 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            data = json.dumps({"seq": seq, "t": time.time_ns()}, separators=(",", ":"))
            event_id = pub.publish(TOPIC, data)
            frames.append(b"id: " + event_id.encode() + b"\n" + event_body("", data))
    return frames


def _cpu(ep: Endpoint, lb: LoadBalancer, load: H2Load) -> dict[str, float]:
    return {
        "nginx": cpu_seconds(lb.worker_pids()),
        "gateway": cpu_seconds(ep.pids()),
        "h2load": cpu_seconds([load.pid]),
    }


def measure_once(
    protocol: Protocol,
    plan: Plan,
    ep: Endpoint,
    lb: LoadBalancer,
    redis_url: str,
    prefix: str,
    h2load: str,
    log: IO[bytes],
) -> dict[str, Any]:
    """h2load's streams open through nginx, then the events; the figures of this round."""
    connections, streams = protocol.layout(plan)
    clients = connections * streams
    port = lb.tls_port if protocol.tls else lb.plain_port
    url = f"{'https' if protocol.tls else 'http'}://127.0.0.1:{port}/events?topic={TOPIC}"
    seconds = math.ceil(plan.connect_budget + plan.duration + plan.drain_seconds)
    args = command(
        url, connections=connections, streams=streams, seconds=seconds, http1=not protocol.http2
    )
    ports = {ep.port, lb.plain_port, lb.tls_port}
    before = gateway_counters(ep.port)
    rss_before = rss_bytes(lb.worker_pids())
    started = time.monotonic()
    with H2Load(args, h2load, log) as load:
        wait_until(
            lambda: gateway_counters(ep.port).connected - before.connected >= clients,
            plan.connect_budget,
            f"{clients} streams open at the gateway through nginx ({protocol.label})",
            observe=lambda: gateway_counters(ep.port),
        )
        connect_s = time.monotonic() - started
        wait_until(Quiet(ep.port, ports), 10, "the streams' first bytes to go through")
        opened = gateway_counters(ep.port)
        rss_open = rss_bytes(lb.worker_pids())
        cpu0, t0 = _cpu(ep, lb, load), time.monotonic()
        frames = publish_at_rate(redis_url, prefix, plan.events, plan.rate)
        publish_s = time.monotonic() - t0
        expected = len(frames) * clients
        wait_until(
            lambda: gateway_counters(ep.port).events_sent - before.events_sent >= expected,
            plan.drain_seconds,
            f"the gateway to hand {expected} deliveries out",
            observe=lambda: gateway_counters(ep.port),
        )
        # Polled, not slept: the last frames are through once no socket holds a byte.
        wait_until(Quiet(ep.port, ports), plan.drain_seconds, "every frame to reach h2load")
        cpu1, t1 = _cpu(ep, lb, load), time.monotonic()
        if t1 - started > seconds - 0.5:
            raise BenchError(f"h2load's {seconds} s ran out before every event went through")
        report = load.report(timeout=seconds + 30)
    after = gateway_counters(ep.port)
    prelude = opened.bytes_sent - before.bytes_sent  # each stream's `retry:` line
    frame_bytes = sum(len(f) for f in frames)
    frame_mean = frame_bytes / len(frames)
    from_bytes = (report.data_bytes - prelude) / frame_mean
    deliveries = round(from_bytes)
    window = t1 - t0
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    gateway_deliveries = after.events_sent - before.events_sent
    return {
        "application_protocol": report.application_protocol,
        "tls": f"{report.tls_protocol} {report.cipher}".strip(),
        "clients": clients,
        "connections": connections,
        "streams_per_connection": streams,
        "events": len(frames),
        "expected_deliveries": expected,
        "gateway_deliveries": gateway_deliveries,
        "h2load_deliveries": round(from_bytes, 2),
        "deliveries": deliveries,
        # every frame of every event reached every stream, byte for byte, and nothing more
        "all_delivered": gateway_deliveries == expected
        and report.data_bytes - prelude == clients * frame_bytes
        and report.data_bytes == after.bytes_sent - before.bytes_sent,
        "streams_opened": report.started,
        "streams_2xx": report.status_2xx,
        "h2load_errored": report.errored,
        "h2load_data_bytes": report.data_bytes,
        "h2load_total_bytes": report.total_bytes,
        "gateway_bytes_sent": after.bytes_sent - before.bytes_sent,
        "prelude_bytes": prelude,
        "frame_bytes_mean": round(frame_mean, 2),
        "connect_s": round(connect_s, 2),
        "publish_s": round(publish_s, 2),
        "window_s": round(window, 2),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cores": {k: round(v / window, 3) for k, v in cpu.items()},
        "cpu_us_per_delivery": {k: round(v / deliveries * 1e6, 3) for k, v in cpu.items()}
        if deliveries
        else None,
        "nginx_rss_kb_per_client": round((rss_open - rss_before) / clients / 1024, 1),
        "h2load_command": " ".join(args),
    }
