"""web/sse-hub.js in real headless Chromium: an application on another origin imports it from
the hub, against real gateways (behind the deployment's nginx), the real Redis, or a private
one that goes away.

The application (tests/web/reload-app.html) appends every event handed to it to a log in
localStorage; the log outlives reloads, so it shows what reached the application across them.
Each test leaves a screenshot of every tab in its `tmp_path`.
"""

# ruff: noqa: F811 - the fixture `browser`, imported from browser.py, is a parameter

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from browser import (  # noqa: F401 (fixture)
    WAIT_MS,
    SteadyPublisher,
    browser,
    publish_numbered,
    ready_gateway,
)
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect
from processes import REPO_ROOT, Gateway, Gateways, Nginx, RedisServers, free_port, wait_until
from sse_client import ids_increase, metric, stream_entries

from hub.config import Settings
from publisher import Publisher

APP_DIR = REPO_ROOT / "tests" / "web"
APP_PAGE = "reload-app.html"
SECRET = "a-test-secret-of-at-least-32-bytes!"
TOKEN_SECONDS = 3.0
RETRYING_IN = re.compile(r"retrying in ([0-9.]+) s$")
WAIT_S = WAIT_MS / 1000
FEED_RATE = 40.0
PRIVATE_RATE = 30.0


def numbered(topic: str) -> Callable[[int], str]:
    """Event n's data: `<topic>#<n>`."""
    return lambda n: f"{topic}#{n}"


def mint(ttl: float, subscribe: str = "private/*") -> str:
    claims = {"mercure": {"subscribe": [subscribe]}, "exp": time.time() + ttl}
    return jwt.encode(claims, SECRET, algorithm="HS256")


class _AppHandler(BaseHTTPRequestHandler):
    server: AppServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/token":
            body, kind = self.server.mint().encode(), "text/plain"
        elif url.path == f"/{APP_PAGE}":
            body, kind = (APP_DIR / APP_PAGE).read_bytes(), "text/html"
        else:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a request log per token would only hide the test's own output


class AppServer(ThreadingHTTPServer):
    """The application's own origin: its page, and `/token`, a fresh token lasting
    TOKEN_SECONDS (what an application's backend would hand its page)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _AppHandler)
        self.minted = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def page_url(self, hub: str, topic: str, **options: str) -> str:
        query = {"hub": hub, "topic": topic, **{k.replace("_", "-"): v for k, v in options.items()}}
        return f"{self.origin}/{APP_PAGE}?{urlencode(query)}"

    def mint(self) -> str:
        with self._lock:
            self.minted += 1
        return mint(TOKEN_SECONDS)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


@pytest.fixture
def app_server() -> Iterator[AppServer]:
    with AppServer() as server:
        yield server


@pytest.fixture
def context(browser: Browser, tmp_path: Path) -> Iterator[BrowserContext]:
    """One browser profile for the test's tabs (they share localStorage); none may raise."""
    context = browser.new_context()
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    try:
        yield context
        assert errors == [], f"a page raised: {errors}"
    finally:
        for index, tab in enumerate(context.pages):
            tab.screenshot(path=tmp_path / f"tab-{index}.png")
        context.close()


class App:
    """The application in one tab: what its page shows, its log, and the states it went through."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.log_key = "app-log:" + parse_qs(urlsplit(url).query).get("key", [""])[0]

    @classmethod
    def open(cls, context: BrowserContext, url: str) -> App:
        app = cls(context.new_page(), url)
        app.page.goto(url)
        expect(app.page).to_have_title("hub stream test app")
        return app

    def shown(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def log(self) -> list[tuple[str, str]]:
        text = self.page.evaluate("key => localStorage.getItem(key)", self.log_key)
        return [(event_id, data) for event_id, data in json.loads(text or "[]")]

    def data(self) -> list[str]:
        return [data for _, data in self.log()]

    def wait_logged(self, count: int) -> None:
        self.page.wait_for_function(
            "([key, n]) => JSON.parse(localStorage.getItem(key) ?? '[]').length >= n",
            arg=[self.log_key, count],
            timeout=WAIT_MS,
        )

    def wait_for(self, data: str) -> None:
        """Until the last event in the log is `data`."""
        self.page.wait_for_function(
            "([key, data]) => JSON.parse(localStorage.getItem(key) ?? '[]').at(-1)?.[1] === data",
            arg=[self.log_key, data],
            timeout=WAIT_MS,
        )

    def states(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.page.evaluate("window.appStates"))


def publish(redis_url: str, key_prefix: str, topic: str, data: list[str]) -> list[str]:
    """Publishes each of `data` to `topic`, in order; returns them once all are acknowledged."""
    with Publisher(Settings(redis_url=redis_url, key_prefix=key_prefix)) as hub:
        for item in data:
            hub.publish(topic, item)
    return data


def assert_exactly_once(log: list[tuple[str, str]], acknowledged: list[str]) -> None:
    """The log holds every acknowledged event once, in order, and nothing else."""
    data = [d for _, d in log]
    lost = sorted(set(acknowledged) - set(data))
    duplicated = len(data) - len(set(data))
    assert (lost, duplicated) == ([], 0), f"lost {len(lost)} ({lost[:5]}), duplicated {duplicated}"
    assert data == acknowledged, "every event, in the order published, and no other"
    assert ids_increase([event_id for event_id, _ in log])


def holder(gateways: list[Gateway]) -> Gateway | None:
    """The gateway holding the one open stream there is, if there is just one."""
    streams = [
        metric(httpx.get(f"{g.url}/metrics").text, "hub_connected_clients") for g in gateways
    ]
    return gateways[streams.index(1)] if sorted(streams) == [0] * (len(streams) - 1) + [1] else None


def crash_the_gateway_holding(app: App, gateways: list[Gateway]) -> Gateway:
    """SIGKILLs the gateway holding the app's stream; returns once events flow again (through
    another gateway: the browser reconnected by itself)."""
    holding = wait_until(lambda: holder(gateways), WAIT_S, "the app's one stream on one gateway")
    assert holding is not None
    seen = len(app.states())
    holding.kill()
    app.wait_logged(len(app.log()) + 20)
    after = [state["state"] for state in app.states()[seen:]]
    assert "reconnecting" in after, after
    return holding


def test_reloads_and_a_killed_gateway_hand_every_event_over_exactly_once(
    context: BrowserContext,
    gateway: Gateways,
    app_server: AppServer,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    env = {"HUB_CORS_ORIGINS": app_server.origin, "HUB_RETRY_MS": "500"}
    gateways = [ready_gateway(g) for g in gateway.many(3, env)]
    with (
        Nginx(tmp_path / "nginx", gateways) as nginx,
        SteadyPublisher(redis_url, key_prefix, "feed", FEED_RATE, numbered("feed")) as steady,
    ):
        url = app_server.page_url(nginx.url, "feed")
        first = App.open(context, url)
        expect(first.shown("state")).to_have_text("open")
        expect(first.shown("resumed")).to_have_text("false")
        # The stream is registered before it opens: from here on, nothing can be missed.
        steady.start()
        first.wait_logged(10)
        killed = None
        for reload in range(5):
            if reload == 2:
                killed = crash_the_gateway_holding(first, gateways)
            logged = len(first.log())
            first.page.reload()
            expect(first.shown("resumed")).to_have_text("true")
            expect(first.shown("state")).to_have_text("open")
            first.wait_logged(logged + 10)
        steady.stop()
        first.wait_for(steady.publish("feed#last"))
        log = first.log()
        assert_exactly_once(log, steady.acknowledged)
        assert killed is not None and killed.returncode is not None

        # A new tab, once the first is gone: it resumes after the last event, nothing repeated.
        first.page.close()
        missed = [steady.publish(f"feed#while-closed-{n}") for n in range(5)]
        second = App.open(context, url)
        expect(second.shown("resumed")).to_have_text("true")
        second.wait_for(missed[-1])
        assert_exactly_once(second.log(), steady.acknowledged)
        assert steady.refused == []


def test_a_cursor_older_than_the_history_is_one_gap_then_every_kept_event(
    context: BrowserContext,
    gateway: Gateways,
    app_server: AppServer,
    redis_url: str,
    key_prefix: str,
) -> None:
    hub = ready_gateway(gateway({"HUB_CORS_ORIGINS": app_server.origin}))
    ids = publish_numbered(redis_url, key_prefix, "feed", 1, 5)
    # A short history: trimming (approximate, whole stream nodes) drops the events after it.
    publish_numbered(redis_url, key_prefix, "feed", 6, 305, env={"HUB_RETENTION_MAXLEN": "10"})
    kept = stream_entries(redis_url, key_prefix, "feed")
    assert 10 <= len(kept) < 300, len(kept)

    app = App.open(context, app_server.page_url(hub.url, "feed", key="old", seed=ids[1]))
    assert json.loads(kept[-1][2])["seq"] == 305
    app.wait_for(kept[-1][2])
    expect(app.shown("resumed")).to_have_text("true")
    expect(app.shown("gaps")).to_have_text("1")
    gaps = app.page.evaluate("window.appGaps")
    assert gaps == [{"topic": "feed", "reason": "history-truncated", "firstKept": kept[0][0]}]
    assert app.log() == [(event_id, data) for event_id, _, data in kept]
    expect(app.shown("state")).to_have_text("open")


def test_a_hub_without_redis_is_retried_ever_more_slowly_and_resumed_once_it_is_back(
    context: BrowserContext,
    gateway: Gateways,
    app_server: AppServer,
    private_redis: RedisServers,
    key_prefix: str,
) -> None:
    server = private_redis(persistent=True)
    env = {
        "HUB_CORS_ORIGINS": app_server.origin,
        # Browsers on their own would come back every 150-450 ms.
        "HUB_RETRY_MS": "300",
        "HUB_REDIS_TIMEOUT_SECONDS": "1",
    }
    hub = ready_gateway(gateway(env, redis_url=server.url))
    app = App.open(context, app_server.page_url(hub.url, "feed"))
    expect(app.shown("state")).to_have_text("open")
    published = publish(server.url, key_prefix, "feed", ["before 1", "before 2", "before 3"])
    app.wait_logged(3)

    server.kill()
    wait_until(lambda: not hub.answers("/readyz"), WAIT_S, "the gateway to miss Redis")
    app.page.reload()
    expect(app.shown("resumed")).to_have_text("true")
    expect(app.shown("state")).to_have_text("unavailable")
    app.page.wait_for_function(
        "window.appStates.filter(s => s.state === 'unavailable').length >= 3", timeout=WAIT_MS
    )
    states = app.states()
    away = [s for s in states if s["state"] == "unavailable"][:3]
    # One request per try (the client asks before it opens a stream again)...
    tries = [s["state"] for s in states if away[0]["at"] < s["at"] < away[2]["at"]]
    assert tries == ["connecting", "unavailable", "connecting"], states
    # ...after a wait that doubles each time (give or take a quarter), and is really waited.
    delays = [1000 * float(RETRYING_IN.findall(s["reason"])[0]) for s in away]
    assert 750 <= delays[0] < delays[1] < delays[2], delays
    waited = [b["at"] - a["at"] for a, b in itertools.pairwise(away)]
    assert all(w >= d - 100 for w, d in zip(waited, delays, strict=False)), (waited, delays)

    server.start()
    ready_gateway(hub)
    published += publish(server.url, key_prefix, "feed", ["after 1", "after 2", "after 3"])
    app.wait_for("after 3")
    expect(app.shown("state")).to_have_text("open")
    assert_exactly_once(app.log(), published)


def test_a_token_that_expires_mid_stream_is_renewed_and_nothing_is_missed(
    context: BrowserContext,
    gateway: Gateways,
    app_server: AppServer,
    redis_url: str,
    key_prefix: str,
) -> None:
    env = {
        "HUB_CORS_ORIGINS": app_server.origin,
        "HUB_JWT_KEY": SECRET,
        "HUB_PRIVATE_TOPICS": "private/*",
        "HUB_RETRY_MS": "300",
    }
    hub = ready_gateway(gateway(env))
    renewed = App.open(context, app_server.page_url(hub.url, "private/feed", token_url="/token"))
    # A fixed token, lasting as long, and nothing to renew it with.
    fixed_url = app_server.page_url(hub.url, "private/feed", key="fixed", token=mint(TOKEN_SECONDS))
    fixed = App.open(context, fixed_url)
    for app in (renewed, fixed):
        expect(app.shown("state")).to_have_text("open")
    with SteadyPublisher(
        redis_url, key_prefix, "private/feed", PRIVATE_RATE, numbered("private/feed")
    ) as steady:
        steady.start()
        renewed.wait_logged(5)
        # A second token, and events after it: the stream outlived the first one.
        wait_until(lambda: app_server.minted >= 2, WAIT_S * 2, "a renewed token")
        renewed.wait_logged(len(renewed.log()) + 20)
        steady.stop()
        renewed.wait_for(steady.publish("private/feed#last"))
        assert_exactly_once(renewed.log(), steady.acknowledged)
    assert [s["state"] for s in renewed.states()].count("open") >= 2

    expect(fixed.shown("state")).to_have_text("closed")
    expect(fixed.shown("reason")).to_have_text("HTTP 401: the token has expired")
    assert "open" in [s["state"] for s in fixed.states()]
