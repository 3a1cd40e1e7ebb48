"""Mercure clients no one here wrote, against the hub: Symfony's Mercure component
publishing (Debian's php-symfony-mercure), Chromium's EventSource (with the cookie, on the
hub's origin and, with credentials, from another one) and httpx-sse subscribing, through
nginx and three gateways, one of which is killed mid-stream.

Every subscriber must get every update it may see exactly once, in the order published,
and none it may not: those of the killed gateway resume on another with `Last-Event-ID`.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from browser import WAIT_MS, browser  # noqa: F401 (fixture)
from httpx_sse import connect_sse
from playwright.sync_api import Browser, Page
from processes import REPO_ROOT, Gateways, Nginx, require_tool
from sse_client import metric

SECRET = "a-test-secret-of-at-least-32-bytes!"
BOOKS = "https://example.com/books/"
PUBLISHER = REPO_ROOT / "tests" / "interop" / "mercure_publish.php"
UPDATES = 150
INTERVAL_MS = 25


def legacy_token(subscribe: list[str] | None = None, publish: list[str] | None = None) -> str:
    claims = {"mercure": {"subscribe": subscribe or [], "publish": publish or []}}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def current_token(subscribe: list[dict[str, str]]) -> str:
    claims = {
        "authorization_details": [
            {"type": "mercure", "actions": ["subscribe"], "topics": subscribe}
        ],
        "exp": int(time.time() + 600),
    }
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})


@dataclass(frozen=True)
class Published:
    n: int
    topic: str
    private: bool
    id: str | None


@dataclass
class Subscriber:
    """What one subscriber may see, and what it saw."""

    name: str
    selects: Callable[[Published], bool]
    reads_private: Callable[[Published], bool]
    received: list[tuple[str, str]] = field(default_factory=list)

    def may_see(self, update: Published) -> bool:
        return self.selects(update) and (not update.private or self.reads_private(update))


class PythonSubscriber(threading.Thread):
    """httpx-sse in a thread, reconnecting with Last-Event-ID as EventSource does."""

    def __init__(self, url: str, params: list[tuple[str, str]], headers: dict[str, str],
                 record: Subscriber) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.url, self.params, self.headers, self.record = url, params, headers, record
        self.stopped = threading.Event()
        self.connected = threading.Event()

    def run(self) -> None:
        last = ""
        with httpx.Client(base_url=self.url, timeout=httpx.Timeout(5.0, read=30.0)) as http:
            while not self.stopped.is_set():
                headers = {**self.headers, **({"Last-Event-ID": last} if last else {})}
                try:
                    with connect_sse(
                        http, "GET", "/.well-known/mercure", params=self.params, headers=headers
                    ) as source:
                        if source.response.status_code == 200:
                            self.connected.set()
                        for event in source.iter_sse():
                            if event.data:
                                self.record.received.append((event.id, event.data))
                                last = event.id
                            if self.stopped.is_set():
                                return
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)


def run_publisher(hub_url: str) -> subprocess.Popen[str]:
    php = require_tool("php")
    return subprocess.Popen(
        [php, str(PUBLISHER), f"{hub_url}/.well-known/mercure",
         legacy_token(publish=["*"]), str(UPDATES), str(INTERVAL_MS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


BROWSER_SUBSCRIBE = """([url, credentials]) => {
    window.received = [];
    const source = window.source = new EventSource(url, { withCredentials: credentials });
    source.onmessage = (event) => window.received.push([event.lastEventId, event.data]);
}"""


@pytest.fixture
def pages(browser: Browser) -> Iterator[Callable[[], Page]]:  # noqa: F811 (the fixture)
    contexts = []

    def make() -> Page:
        context = browser.new_context()
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def test_symfony_chromium_and_httpx_sse_through_nginx_with_a_gateway_killed(
    gateway: Gateways, tmp_path: Path, pages: Callable[[], Page]
) -> None:
    require_tool("php")
    # The application's own origin: a real server on the loopback address, as Chromium
    # lets only such a page reach a hub on the loopback address.
    app_server = ThreadingHTTPServer(("127.0.0.1", 0), AppPage)
    threading.Thread(target=app_server.serve_forever, daemon=True).start()
    other_origin = f"http://127.0.0.1:{app_server.server_port}"
    env = {
        "HUB_JWT_KEY": SECRET,
        "HUB_RETRY_MS": "300",
        "HUB_SHUTDOWN_SECONDS": "3",
        "HUB_CORS_ORIGINS": other_origin,
    }
    gateways = gateway.many(3, env)
    nginx = Nginx(tmp_path / "nginx", gateways).start()
    try:
        subscribers = [
            Subscriber(
                "Chromium, same origin, older dialect, cookie",
                lambda u: True,
                lambda u: u.topic in (BOOKS + "1", BOOKS + "2"),
            ),
            Subscriber(
                "Chromium, another origin, withCredentials",
                lambda u: True,
                lambda u: u.topic == BOOKS + "3",
            ),
            Subscriber(
                "httpx-sse, anonymous, exact",
                lambda u: u.topic in (BOOKS + "0", BOOKS + "1"),
                lambda u: False,
            ),
            Subscriber(
                "httpx-sse, an alternate topic",
                lambda u: u.n % 4 == 0 and u.topic == BOOKS + "4",
                lambda u: False,
            ),
            Subscriber("httpx-sse, token for everything", lambda u: True, lambda u: True),
        ]
        same_origin = pages()
        same_origin.context.add_cookies([{
            "name": "mercureAuthorization", "value": legacy_token([BOOKS + "1", BOOKS + "{id}.x", BOOKS + "2"]),
            "url": nginx.url,
        }])  # fmt: skip
        same_origin.goto(f"{nginx.url}/healthz")
        same_origin.evaluate(
            BROWSER_SUBSCRIBE, [f"/.well-known/mercure?topic={BOOKS}{{id}}", False]
        )
        cross = pages()
        cross.context.add_cookies([{
            "name": "mercureAccessToken", "value": current_token([{"match": BOOKS + "3"}]),
            "url": nginx.url,
        }])  # fmt: skip

        cross.goto(f"{other_origin}/")
        cross.evaluate(
            BROWSER_SUBSCRIBE,
            [f"{nginx.url}/.well-known/mercure?matchURLPattern={BOOKS}:id", True],
        )
        threads = [
            PythonSubscriber(nginx.url, [("match", BOOKS + "0"), ("match", BOOKS + "1")], {},
                             subscribers[2]),
            PythonSubscriber(nginx.url, [("match", BOOKS + "4.jsonld")], {}, subscribers[3]),
            PythonSubscriber(nginx.url, [("match", "*")],
                             {"Authorization": f"Bearer {legacy_token(['*'])}"}, subscribers[4]),
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        # Every stream is open (a fresh one starts with the updates published after it).
        deadline = time.monotonic() + 20
        for thread in threads:
            assert thread.connected.wait(max(0.0, deadline - time.monotonic()))
        for page in (same_origin, cross):
            page.wait_for_function("window.source && window.source.readyState === 1")
        publisher = run_publisher(gateways[2].url)
        time.sleep(UPDATES * INTERVAL_MS / 3000)
        # Kill the gateway that holds the most streams (the publisher's is spared).
        streams = [metric(httpx.get(f"{g.url}/metrics").text, "hub_connected_clients")
                   for g in gateways[:2]]  # fmt: skip
        victim = gateways[streams.index(max(streams))]
        assert max(streams) > 0
        victim.kill()
        out, err = publisher.communicate(timeout=120)
        published = [Published(**json.loads(line)) for line in out.splitlines()]
        assert len(published) == UPDATES, err
        assert all(update.id for update in published), f"a publish failed: {err}"
        expected = {s.name: [u for u in published if s.may_see(u)] for s in subscribers}

        def everything_arrived() -> bool:
            subscribers[0].received = [tuple(x) for x in same_origin.evaluate("window.received")]
            subscribers[1].received = [tuple(x) for x in cross.evaluate("window.received")]
            return all(
                sum(data.startswith("update ") for _, data in s.received) >= len(expected[s.name])
                for s in subscribers
            )

        deadline = time.monotonic() + WAIT_MS / 1000
        while not everything_arrived() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        everything_arrived()
        for subscriber in subscribers:
            # A token for everything also reads the hub's subscription events: not counted.
            subscriber.received = [r for r in subscriber.received if r[1].startswith("update ")]
            wanted = [(u.id, f"update {u.n}") for u in expected[subscriber.name]]
            assert subscriber.received == wanted, (
                f"{subscriber.name}: {len(subscriber.received)} received, {len(wanted)} expected;"
                f" first difference: {_first_difference(subscriber.received, wanted)}"
            )
        assert (
            any(s.received for s in subscribers) and len(expected[subscribers[4].name]) == UPDATES
        )
    finally:
        for thread in locals().get("threads", []):
            thread.stopped.set()
        nginx.close()
        app_server.shutdown()
        app_server.server_close()


class AppPage(BaseHTTPRequestHandler):
    """An empty page of the application that subscribes from another origin."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>app</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _first_difference(got: list[Any], wanted: list[Any]) -> str:
    for index, (a, b) in enumerate(zip(got, wanted, strict=False)):
        if a != b:
            return f"at {index}: got {a}, expected {b}"
    return f"lengths {len(got)} / {len(wanted)}"
