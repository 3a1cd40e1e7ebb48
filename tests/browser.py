"""Playwright helpers for the browser tests: Debian's Chromium, and the page read as a person would.

`HubPage` finds things by their `data-testid` and reads what they show, as a
person would; it never reaches into the page's JavaScript.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import redis
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Playwright,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)
from processes import REPO_ROOT, Gateway, require_tool

from hub.config import Settings
from publisher import Publisher

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LAPTOP: ViewportSize = {"width": 1440, "height": 1000}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Generous: the machine is shared with other test runs.
WAIT_MS = 30_000
PUBLISH_TIMEOUT_S = 60.0
WEB_DIR = REPO_ROOT / "web"
STATIC_ORIGIN = "http://page.test"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def launch_chromium(playwright: Playwright) -> Browser:
    """Headless Chromium from the system package (Playwright's own download is not used)."""
    executable = require_tool("chromium")
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module; `expect` waits up to WAIT_MS meanwhile."""
    require_tool("chromium")
    expect.set_options(timeout=WAIT_MS)
    try:
        with sync_playwright() as playwright:
            chromium = launch_chromium(playwright)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        expect.set_options(timeout=None)


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    """A fresh browser context and page; `final.png` is saved even when the test fails."""
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        assert errors == [], f"the page raised: {errors}"
    finally:
        try:
            page.screenshot(path=tmp_path / "final.png", full_page=True)
        finally:
            context.close()


def serve_web_files(page: Page) -> str:
    """Serves web/'s files to `page` from inside the browser, with no gateway, to test the
    page's modules alone: the origin's root is an empty document that can import them."""

    def fulfil(route: Route) -> None:
        path = route.request.url.removeprefix(STATIC_ORIGIN).split("?")[0].lstrip("/")
        if not path:
            route.fulfill(body="<!doctype html><title>modules</title>", content_type="text/html")
            return
        file = (WEB_DIR / path).resolve()
        if file.parent != WEB_DIR.resolve() or not file.is_file():
            route.fulfill(status=404, body="not found")
            return
        route.fulfill(body=file.read_bytes(), content_type=MEDIA_TYPES.get(file.suffix))

    page.route(f"{STATIC_ORIGIN}/**", fulfil)
    return STATIC_ORIGIN


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the publisher CLI: nothing HUB_* leaks in from the test process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str],
    redis_url: str,
    key_prefix: str,
    stdin: str = "",
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Runs `sse-publish ARGS` against `redis_url`/`key_prefix`; returns its output lines."""
    command = [
        sys.executable, "-m", "publisher.cli",
        "--redis-url", redis_url, "--prefix", key_prefix,
        *args,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        input=stdin.encode(),
        capture_output=True,
        cwd=REPO_ROOT,
        env=cli_env(env),
        timeout=PUBLISH_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}: {done.stderr.decode()}"
    return done.stdout.decode().split()


def publish_numbered(
    redis_url: str,
    key_prefix: str,
    topic: str,
    first: int,
    last: int,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Publishes JSON events with `seq` first..last with `sse-publish lines`; returns their IDs."""
    lines = "".join(f'{{"seq":{seq},"note":"event {seq}"}}\n' for seq in range(first, last + 1))
    return run_cli(["lines", topic, "--print-ids"], redis_url, key_prefix, stdin=lines, env=env)


class SteadyPublisher:
    """Publishes numbered events at a steady rate from a thread, from `data(n)` for n = 1, 2, …
    (by default `{"seq": n}`, as a page's panels check them); remembers what Redis
    acknowledged, and what it refused (the publisher sees that: never a silent loss)."""

    def __init__(
        self,
        redis_url: str,
        key_prefix: str,
        topic: str,
        rate: float,
        data: Callable[[int], str] = lambda n: json.dumps({"seq": n}),
    ) -> None:
        self.topic = topic
        self.rate = rate
        self.refused: list[str] = []
        self._data = data
        self._published: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._publisher = Publisher(Settings(redis_url=redis_url, key_prefix=key_prefix))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def publish(self, data: str) -> str:
        """One event now; its data once acknowledged."""
        try:
            event_id = self._publisher.publish(self.topic, data)
        except (redis.RedisError, OSError) as exc:
            self.refused.append(f"{data}: {exc!r}")
            raise
        with self._lock:
            self._published.append((event_id, data))
        return data

    def _run(self) -> None:
        started = time.monotonic()
        for n in itertools.count(1):
            self.publish(self._data(n))
            if self._stop.wait(max(0.0, started + n / self.rate - time.monotonic())):
                return

    @property
    def ids(self) -> list[str]:
        """The IDs of the events acknowledged so far, in order."""
        with self._lock:
            return [event_id for event_id, _ in self._published]

    @property
    def acknowledged(self) -> list[str]:
        """The data of the events acknowledged so far, in order."""
        with self._lock:
            return [data for _, data in self._published]

    def seq_of(self, event_id: str) -> int:
        return self.ids.index(event_id) + 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(PUBLISH_TIMEOUT_S)
        assert not self._thread.is_alive(), "the publisher did not stop"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread.is_alive():
            self.stop()
        self._publisher.close()


def ready_gateway(gateway: Gateway) -> Gateway:
    """Waits until the gateway also has Redis and its subscription (the page connects at once)."""
    return gateway.wait_healthy(path="/readyz")


def parse_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


class HubPage:
    """The test page, driven and read like a person would."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")

    def open(self, query: str = "") -> HubPage:
        self.page.goto(f"{self.base_url}/{query}")
        expect(self.page).to_have_title("SSE hub · live clients")
        return self

    def reload(self) -> HubPage:
        """As a person reloads: the page goes without a word and makes its panels again."""
        self.page.reload()
        expect(self.page).to_have_title("SSE hub · live clients")
        return self

    @property
    def panels(self) -> Locator:
        return self.page.get_by_test_id("client-panel")

    def panel(self, index: int) -> Locator:
        return self.panels.nth(index)

    def in_panels(self, testid: str) -> Locator:
        """One element per panel, in panel order."""
        return self.panels.get_by_test_id(testid)

    def expect_all(self, testid: str, text: str, count: int) -> None:
        """Waits until there are `count` panels and each one's `testid` element shows `text`."""
        expect(self.panels).to_have_count(count)
        expect(self.in_panels(testid)).to_have_text([text] * count)

    def expect_open(self, count: int) -> None:
        self.expect_all("state", "open", count)

    def add_client(self, topics: str) -> None:
        before = self.panels.count()
        self.page.get_by_test_id("add-topics").fill(topics)
        self.page.get_by_test_id("add-client").click()
        expect(self.panels).to_have_count(before + 1)

    def shown_events(self, index: int) -> Locator:
        return self.panel(index).get_by_test_id("event")

    def shown_seqs(self, index: int) -> list[int]:
        seqs = self.shown_events(index).evaluate_all("els => els.map(e => e.dataset.seq)")
        return [int(seq) for seq in seqs]

    def shown_ids(self, index: int) -> list[tuple[int, int]]:
        ids = self.shown_events(index).evaluate_all("els => els.map(e => e.dataset.id)")
        return [parse_id(i) for i in ids]

    def summary(self, testid: str) -> Locator:
        return self.page.locator(".summary").get_by_test_id(testid)

    def screenshot(self, path: Path) -> Path:
        self.page.screenshot(path=path, full_page=True)
        return path
