"""Many streams from one browser: HTTP/2 over TLS at nginx lifts the six-connection limit.

A browser opens at most six HTTP/1.1 connections to one host, across all its tabs, and
each EventSource holds one for as long as it is open: a seventh stream waits for one.
Over HTTP/2, which browsers speak over TLS only, every stream of the origin shares one
connection. Real headless Chromium, real nginx (deploy/nginx.conf.template, with a
certificate made by hub.devcert), real gateways and Redis.

The browser trusts the certificate by its public key (Chromium's
--ignore-certificate-errors-spki-list, which works with a profile directory of its own),
not by ignoring certificate errors altogether.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import pytest
from browser import CHROMIUM_ARGS, ready_gateway
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from processes import Gateway, Gateways, Nginx, require_tool, wait_until
from sse_client import metric

from hub.config import Settings
from hub.devcert import DevCertificate, ensure_certificate
from publisher import Publisher

STREAMS = 20
HTTP1_CONNECTIONS = 6
"""Chromium's limit of HTTP/1.1 connections to one host (scheme, name and port)."""
TOPIC = "h2"
CONNECTING, OPEN, CLOSED = 0, 1, 2
"""EventSource.readyState values."""
FAST_RECONNECT = {"HUB_RETRY_MS": "300", "HUB_SHUTDOWN_SECONDS": "5"}
WAIT_S = 30.0
IDLE_SECONDS = 11.0
"""Longer than nginx's client_header_timeout (10 s), its shortest timer on a connection."""


def spki_hash(certificate: Path) -> str:
    """The base64 SHA-256 of the certificate's public key, as Chromium names a trusted key."""
    loaded = x509.load_pem_x509_certificate(certificate.read_bytes())
    der = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def connections_to(port: int) -> int:
    """Established TCP connections to `port` on this machine, from the kernel's table."""
    established = "01"
    count = 0
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        _slot, _local, remote, state, *_ = row.split()
        count += state == established and int(remote.rsplit(":", 1)[1], 16) == port
    return count


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> DevCertificate:
    """One development certificate for every nginx of the module (the browser trusts its key)."""
    return ensure_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def browser(certificate: DevCertificate) -> Iterator[Browser]:
    executable = require_tool("chromium")
    trust = f"--ignore-certificate-errors-spki-list={spki_hash(certificate.certificate)}"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, args=[*CHROMIUM_ARGS, trust], headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser context: its tabs share its connections, as one browser's do."""
    context = browser.new_context()
    try:
        yield context
    finally:
        context.close()


@dataclass
class Hub:
    gateways: list[Gateway]
    nginx: Nginx

    def figures(self, name: str) -> list[int]:
        """One metric's value at each gateway (`hub_connected_clients`: its open streams)."""
        return [int(metric(httpx.get(f"{g.url}/metrics").text, name)) for g in self.gateways]

    def connected_clients(self) -> list[int]:
        return self.figures("hub_connected_clients")


MakeHub = Callable[..., Hub]
"""`hub(count=1, env=None)`: gateways on one Redis, nginx (plain and TLS) in front of them."""


@pytest.fixture
def hub(gateway: Gateways, tmp_path: Path, certificate: DevCertificate) -> Iterator[MakeHub]:
    started: list[Nginx] = []

    def make(count: int = 1, env: Mapping[str, str] | None = None) -> Hub:
        gateways = [
            ready_gateway(g) for g in gateway.many(count, {**FAST_RECONNECT, **(env or {})})
        ]
        nginx = Nginx(
            tmp_path / f"nginx{len(started)}",
            gateways,
            tls=True,
            certificates=certificate.certificate.parent,
        )
        started.append(nginx.start())
        return Hub(gateways, nginx)

    yield make
    for nginx in started:
        nginx.close()


@dataclass(frozen=True)
class Stream:
    """What one EventSource in the page saw."""

    state: int
    opens: int
    data: list[str]
    ids: list[str]


OPEN_STREAMS = """({ path, count }) => {
    window.streams = window.streams || [];
    for (let i = 0; i < count; i++) {
        const stream = { opens: 0, data: [], ids: [], source: new EventSource(path) };
        stream.source.onopen = () => { stream.opens += 1; };
        stream.source.onmessage = (event) => {
            stream.data.push(event.data);
            stream.ids.push(event.lastEventId);
        };
        window.streams.push(stream);
    }
}"""
READ_STREAMS = """() => (window.streams || []).map((s) => ({
    state: s.source.readyState, opens: s.opens, data: s.data, ids: s.ids,
}))"""
CLOSE_AN_OPEN_STREAM = """() => {
    const stream = window.streams.find((s) => s.source.readyState === EventSource.OPEN);
    stream.source.close();
    window.streams.splice(window.streams.indexOf(stream), 1);
}"""


class Tabs:
    """Tabs of one browser context on one origin, each opening EventSources by script."""

    def __init__(self, context: BrowserContext, origin: str, count: int) -> None:
        self.pages: list[Page] = []
        for _ in range(count):
            page = context.new_page()
            page.goto(f"{origin}/healthz")
            self.pages.append(page)

    def protocols(self) -> list[str]:
        """The protocol each tab's page came over (`h2`, `http/1.1`)."""
        script = "() => performance.getEntriesByType('navigation')[0].nextHopProtocol"
        return [str(page.evaluate(script)) for page in self.pages]

    def open(self, count: int, topic: str = TOPIC) -> None:
        """`count` EventSources on `topic`, spread evenly over the tabs."""
        for index, page in enumerate(self.pages):
            share = count // len(self.pages) + (index < count % len(self.pages))
            page.evaluate(OPEN_STREAMS, {"path": f"/events?topic={topic}", "count": share})

    def streams(self) -> list[Stream]:
        found: list[dict[str, Any]] = []
        for page in self.pages:
            found += page.evaluate(READ_STREAMS)
        return [Stream(**item) for item in found]

    def in_state(self, state: int) -> list[Stream]:
        return [stream for stream in self.streams() if stream.state == state]

    def close_an_open_stream(self) -> None:
        for page in self.pages:
            if any(stream["state"] == OPEN for stream in page.evaluate(READ_STREAMS)):
                page.evaluate(CLOSE_AN_OPEN_STREAM)
                return
        raise AssertionError("no open stream to close")

    def summary(self) -> str:
        streams = self.streams()
        states = [sum(s.state == n for s in streams) for n in (CONNECTING, OPEN, CLOSED)]
        counts = sorted({len(s.data) for s in streams})
        return (
            f"{len(streams)} streams: {states[0]} connecting, {states[1]} open, "
            f"{states[2]} closed; events per stream: {counts}; "
            f"opens: {sum(s.opens for s in streams)}"
        )

    def wait(self, condition: Callable[[list[Stream]], bool], what: str) -> list[Stream]:
        """The streams, once `condition` holds for them."""

        def met() -> list[Stream]:
            streams = self.streams()
            return streams if condition(streams) else []

        return wait_until(met, WAIT_S, what, observe=self.summary)


def publish(redis_url: str, key_prefix: str, numbers: range, topic: str = TOPIC) -> list[str]:
    """Publishes `<topic>#<n>` for each n; returns the event IDs."""
    with Publisher(Settings(redis_url=redis_url, key_prefix=key_prefix)) as hub:
        return [hub.publish(topic, f"{topic}#{n}") for n in numbers]


def expected(numbers: range, topic: str = TOPIC) -> list[str]:
    return [f"{topic}#{n}" for n in numbers]


def assert_each_got_everything_once_in_order(
    streams: Sequence[Stream], numbers: range, ids: Sequence[str]
) -> None:
    wrong = [s for s in streams if s.data != expected(numbers) or s.ids != list(ids)]
    assert wrong == [], (
        f"{len(wrong)} of {len(streams)} streams missed, repeated or reordered events; "
        f"the first: {wrong[0].data if wrong else ''}"
    )


def all_have(count: int) -> Callable[[list[Stream]], bool]:
    return lambda streams: all(s.state == OPEN and len(s.data) >= count for s in streams)


TABS = pytest.mark.parametrize("tab_count", [1, 4], ids=["one-tab", "four-tabs"])


@TABS
def test_over_http2_twenty_streams_share_one_connection_and_get_every_event(
    hub: MakeHub, context: BrowserContext, redis_url: str, key_prefix: str, tab_count: int
) -> None:
    net = hub()
    tabs = Tabs(context, net.nginx.tls_url, tab_count)
    assert tabs.protocols() == ["h2"] * tab_count
    tabs.open(STREAMS)
    tabs.wait(lambda streams: len(streams) == STREAMS and all_have(0)(streams), "all open")

    ids = publish(redis_url, key_prefix, range(1, 11))
    streams = tabs.wait(all_have(10), "every stream to receive 10 events")
    assert_each_got_everything_once_in_order(streams, range(1, 11), ids)
    assert [s.opens for s in streams] == [1] * STREAMS
    assert net.connected_clients() == [STREAMS]
    assert connections_to(net.nginx.tls_port or 0) == 1, "one connection carries every stream"


@TABS
def test_over_http1_six_streams_open_and_the_others_wait_for_a_connection(
    hub: MakeHub, context: BrowserContext, redis_url: str, key_prefix: str, tab_count: int
) -> None:
    net = hub()
    tabs = Tabs(context, net.nginx.url, tab_count)
    assert tabs.protocols() == ["http/1.1"] * tab_count
    tabs.open(STREAMS)
    tabs.wait(
        lambda streams: (
            len(streams) == STREAMS and sum(s.state == OPEN for s in streams) == HTTP1_CONNECTIONS
        ),
        f"{HTTP1_CONNECTIONS} streams to open",
    )

    ids = publish(redis_url, key_prefix, range(1, 6))
    # The waiting streams had every chance the open ones had to receive these.
    streams = tabs.wait(
        lambda streams: sum(len(s.data) == 5 for s in streams) == HTTP1_CONNECTIONS,
        f"the {HTTP1_CONNECTIONS} open streams to receive 5 events",
    )
    opened = [s for s in streams if s.state == OPEN]
    waiting = [s for s in streams if s.state == CONNECTING]
    assert len(opened) == HTTP1_CONNECTIONS
    assert_each_got_everything_once_in_order(opened, range(1, 6), ids)
    assert len(waiting) == STREAMS - HTTP1_CONNECTIONS
    assert all(s.opens == 0 and s.data == [] for s in waiting)
    assert net.connected_clients() == [HTTP1_CONNECTIONS]
    assert connections_to(net.nginx.port) == HTTP1_CONNECTIONS

    # A stream closed frees a connection: the next one waiting takes it.
    tabs.close_an_open_stream()
    streams = tabs.wait(
        lambda streams: (
            sum(s.opens for s in streams) == HTTP1_CONNECTIONS
            and sum(s.state == OPEN for s in streams) == HTTP1_CONNECTIONS
        ),
        "a waiting stream to open in the closed one's place",
    )
    assert sum(s.state == CONNECTING for s in streams) == STREAMS - HTTP1_CONNECTIONS - 1


class RawStream:
    """A stream read by `curl --http2 -N` line by line, with the time each line came."""

    def __init__(self, url: str, ca: Path) -> None:
        command = [require_tool("curl"), "--http2", "-sS", "-N", "--cacert", str(ca)]
        self.process = subprocess.Popen(
            [*command, "-D", "-", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.started, line.decode().rstrip("\r\n")))

    def heartbeats(self) -> list[float]:
        """When each heartbeat (an empty comment line) came, in s since the request."""
        return [at for at, line in self.lines if line == ":"]

    def texts(self) -> list[str]:
        return [line for _, line in self.lines]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.process.kill()
        self.process.communicate()
        self._reader.join(5)


def test_heartbeats_keep_an_idle_http2_stream_open_past_nginxs_timeouts(
    hub: MakeHub, redis_url: str, key_prefix: str
) -> None:
    net = hub(env={"HUB_HEARTBEAT_SECONDS": "1"})
    with RawStream(f"{net.nginx.tls_url}/events?topic=idle", net.nginx.ca) as raw:
        wait_until(
            lambda: raw.texts() or raw.process.poll() is not None, WAIT_S, "the response's head"
        )
        heads = [line.split()[:2] for line in raw.texts()[:1]]
        assert heads == [["HTTP/2", "200"]], raw.texts()[:3]
        # Nothing but heartbeats, and nothing from the client, for longer than any of
        # nginx's timers on a client's connection.
        wait_until(
            lambda: (
                raw.process.poll() is not None
                or (raw.heartbeats() and raw.heartbeats()[-1] >= IDLE_SECONDS)
            ),
            WAIT_S,
            f"a heartbeat {IDLE_SECONDS:g} s into the stream",
            observe=lambda: f"heartbeats at {raw.heartbeats()}; curl exited {raw.process.poll()}",
        )
        assert raw.process.poll() is None, f"the stream was cut: {raw.texts()[-5:]}"
        assert len(raw.heartbeats()) >= IDLE_SECONDS / 2

        [event_id] = publish(redis_url, key_prefix, range(1, 2), topic="idle")
        wait_until(
            lambda: "data: idle#1" in raw.texts(),
            WAIT_S,
            "the event on the stream that was idle",
            observe=lambda: raw.texts()[-5:],
        )
        assert f"id: {event_id}" in raw.texts()


def test_http2_streams_resume_on_another_gateway_when_theirs_drains_or_dies(
    hub: MakeHub,
    context: BrowserContext,
    redis_url: str,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    net = hub(3)
    tabs = Tabs(context, net.nginx.tls_url, 1)
    assert tabs.protocols() == ["h2"]
    tabs.open(STREAMS)
    tabs.wait(lambda streams: len(streams) == STREAMS and all_have(0)(streams), "all open")
    ids = publish(redis_url, key_prefix, range(1, 11))
    tabs.wait(all_have(10), "every stream to receive 10 events")
    on_each = net.connected_clients()
    assert sum(on_each) == STREAMS, on_each

    # SIGTERM: the gateway ends its streams and exits; each browser stream comes back, to
    # another gateway, with its Last-Event-ID, while events go on being published.
    drained = max(on_each)
    stopped = net.gateways.pop(on_each.index(drained))
    assert stopped.terminate(10) == 0, stopped.log_tail()
    ids += publish(redis_url, key_prefix, range(11, 21))
    streams = tabs.wait(all_have(20), "every stream to receive 20 events")
    # Each of its streams came back at least once (one that comes back while the gateway
    # is still closing is sent on again).
    assert sum(s.opens for s in streams) >= STREAMS + drained
    on_each = net.connected_clients()
    assert sum(on_each) == STREAMS, on_each

    # SIGKILL: the gateway's streams break off; the browser reconnects them the same way.
    # The events come out while those streams wait to reconnect (HUB_RETRY_MS), so they
    # reach them from the history, after the Last-Event-ID each stream sends.
    killed = max(on_each)
    dead = net.gateways.pop(on_each.index(killed))
    [replayed_before] = net.figures("hub_events_replayed_total")
    dead.kill()
    ids += publish(redis_url, key_prefix, range(21, 31))
    streams = tabs.wait(all_have(30), "every stream to receive 30 events")
    assert sum(s.opens for s in streams) >= STREAMS + drained + killed
    assert_each_got_everything_once_in_order(streams, range(1, 31), ids)
    assert net.connected_clients() == [STREAMS]
    [replayed] = net.figures("hub_events_replayed_total")
    assert replayed > replayed_before, "the moved streams resumed from their Last-Event-ID"
    assert connections_to(net.nginx.tls_port or 0) == 1, "the browser's connection outlived both"
    with capsys.disabled():
        print(
            f"\n[http2 failover] {STREAMS} streams in one tab on one HTTP/2 connection: "
            f"{drained} moved after SIGTERM, {killed} after SIGKILL "
            f"({sum(s.opens for s in streams) - STREAMS} reconnections), "
            f"{replayed - replayed_before} events replayed to them; each got all 30, once, in order"
        )
