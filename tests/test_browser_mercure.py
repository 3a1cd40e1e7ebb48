"""The test page's Mercure mode in real headless Chromium, against a real gateway process.

Two Mercure panels with one URL pattern each (one anonymous, one with a token
that covers a private topic), updates sent by the page's own publish form, and
the presence view listing the subscriptions as they come and go. Screenshots
are left in the test's `tmp_path`.
"""

# ruff: noqa: F811 - the fixtures `browser` and `page`, imported from browser.py, are parameters

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from browser import HubPage, browser, page, ready_gateway  # noqa: F401 (fixtures)
from playwright.sync_api import Locator, Page, expect
from processes import Gateways, free_port

SECRET = "a-browser-test-secret-of-32-bytes-at-least!"
SUBSCRIPTIONS = "/.well-known/mercure/subscriptions"
RELATIVE_PATTERN = "/books/:id"
"""Resolved by the hub against HUB_PUBLIC_URL, as are relative topics."""
READER_SUB = "https://example.com/users/reader"


def token(
    subscribe: Sequence[dict[str, str]] = (),
    publish: Sequence[dict[str, str]] = (),
    **claims: Any,
) -> str:
    """A token in the current form: `authorization_details`, `typ: at+jwt`, `exp`."""
    details = [
        {"type": "mercure", "actions": [action], "topics": list(topics)}
        for action, topics in (("subscribe", subscribe), ("publish", publish))
        if topics
    ]
    body = {"authorization_details": details, "exp": int(time.time() + 600), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})


PUBLISHER = token(publish=[{"match": "*"}])
WATCHER = token(
    [{"match": SUBSCRIPTIONS}, {"match": SUBSCRIPTIONS + "/*", "matchType": "URLPattern"}],
    sub="https://example.com/users/watcher",
)
"""May read the subscriptions API and every subscription event."""


def add_mercure_client(hub: HubPage, patterns: str, bearer: str = "") -> Locator:
    """Adds a Mercure panel through the page's form; the new panel, once its stream is open."""
    before = hub.panels.count()
    hub.page.get_by_test_id("mercure-patterns").fill(patterns)
    hub.page.get_by_test_id("mercure-token").fill(bearer)
    hub.page.get_by_test_id("add-mercure").click()
    expect(hub.panels).to_have_count(before + 1)
    panel = hub.panel(before)
    expect(panel).to_have_attribute("data-mode", "mercure")
    expect(panel.get_by_test_id("state")).to_have_text("open")
    return panel


def publish_update(page: Page, topic: str, data: str, *, private: bool, kind: str = "") -> str:
    """Sends one update from the form in Mercure mode; the ID the hub answered with."""
    page.get_by_test_id("publish-topic").fill(topic)
    page.get_by_test_id("publish-data").fill(data)
    page.get_by_test_id("publish-type").fill(kind)
    page.get_by_test_id("publish-private").set_checked(private)
    page.get_by_test_id("publish-send").click()
    status = page.get_by_test_id("publish-status")
    said = f"Sent 1 {'private ' if private else ''}update to {topic}"
    expect(status).to_contain_text(said)
    found = re.search(r"last ID (\S+)$", status.inner_text())
    assert found is not None, status.inner_text()
    return found.group(1)


def subscription(page: Page, match: str) -> Locator:
    return page.get_by_test_id("subscription").and_(page.locator(f'[data-match="{match}"]'))


def test_mercure_panels_see_what_their_tokens_allow_and_presence_follows_them(
    page: Page, gateway: Gateways, tmp_path: Path
) -> None:
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}/"
    env = {"HUB_JWT_KEY": SECRET, "HUB_PUBLIC_URL": hub_url, "HUB_RETRY_MS": "300"}
    hub = HubPage(page, ready_gateway(gateway(env, port=port)).url).open("?clients=0")
    books = hub_url + "books/"
    public_topic, private_topic = books + "1", books + "2"
    absolute_pattern = books + ":id"
    reader = token([{"match": private_topic}], sub=READER_SUB)

    # The presence view first, so that it hears every subscription begin.
    page.get_by_test_id("presence-token").fill(WATCHER)
    page.get_by_test_id("presence-watch").click()
    expect(page.get_by_test_id("presence-status")).to_have_text("open")

    anonymous = add_mercure_client(hub, RELATIVE_PATTERN)
    covered = add_mercure_client(hub, absolute_pattern, reader)
    expect(anonymous.get_by_test_id("access")).to_have_text("anonymous: public updates only")
    expect(covered.get_by_test_id("access")).to_contain_text("with a token")
    expect(covered.get_by_test_id("topics")).to_have_text(f"URL pattern {absolute_pattern}")

    for match in (RELATIVE_PATTERN, absolute_pattern):
        expect(subscription(page, match)).to_have_count(1)
        expect(subscription(page, match)).to_have_attribute("data-match-type", "URLPattern")
    expect(subscription(page, absolute_pattern).get_by_test_id("subscriber")).to_have_text(
        READER_SUB
    )
    anonymous_subscriber = subscription(page, RELATIVE_PATTERN).get_by_test_id("subscriber")
    expect(anonymous_subscriber).to_have_text(re.compile(r"^urn:uuid:"))
    # The two panels and the presence view's own subscription.
    expect(page.get_by_test_id("presence-count")).to_have_text("3 active")

    page.get_by_test_id("publish-mode-mercure").check()
    page.get_by_test_id("publish-token").fill(PUBLISHER)
    public_id = publish_update(page, public_topic, '{"title": "open to all"}', private=False,
                               kind="book.updated")  # fmt: skip
    private_id = publish_update(page, private_topic, "for the reader only", private=True)
    assert public_id != private_id

    expect(covered.get_by_test_id("count")).to_have_text("2")
    expect(covered.get_by_test_id("last-id")).to_have_text(private_id)
    expect(anonymous.get_by_test_id("count")).to_have_text("1")
    expect(anonymous.get_by_test_id("last-id")).to_have_text(public_id)
    anonymous_events = anonymous.get_by_test_id("event")
    expect(anonymous_events).to_have_count(1)
    expect(anonymous_events.first).to_have_attribute("data-id", public_id)
    expect(anonymous_events.first).to_contain_text("book.updated")
    expect(anonymous_events.first.locator("pre")).to_contain_text('"title": "open to all"')
    expect(anonymous.get_by_test_id("private")).to_have_count(0)

    newest, oldest = covered.get_by_test_id("event").nth(0), covered.get_by_test_id("event").nth(1)
    expect(newest).to_have_attribute("data-id", private_id)
    expect(newest.locator("pre")).to_have_text("for the reader only")
    expect(newest.get_by_test_id("private")).to_have_text("private")
    expect(oldest).to_have_attribute("data-id", public_id)
    expect(oldest.get_by_test_id("private")).to_have_count(0)
    expect(hub.summary("total-delivered")).to_have_text("3")
    expect(hub.summary("lag")).to_have_text(["—", "—"])
    hub.screenshot(tmp_path / "mercure-panels.png")

    # Closing a panel ends its subscription: the presence view hears it leave.
    covered.get_by_test_id("remove").click()
    expect(hub.panels).to_have_count(1)
    expect(subscription(page, absolute_pattern)).to_have_count(0)
    expect(subscription(page, RELATIVE_PATTERN)).to_have_count(1)
    expect(page.get_by_test_id("presence-count")).to_have_text("2 active")
    latest = page.get_by_test_id("presence-change").first
    expect(latest).to_have_attribute("data-kind", "left")
    expect(latest).to_contain_text(absolute_pattern)
    hub.screenshot(tmp_path / "mercure-presence-after-leave.png")

    # The native mode's form is as it was: Mercure's own fields are hidden again.
    page.get_by_test_id("publish-mode-native").check()
    expect(page.get_by_test_id("publish-private")).to_be_hidden()
    expect(page.get_by_test_id("publish-id")).to_be_hidden()


def test_a_presence_token_that_does_not_cover_the_api_is_explained(
    page: Page, gateway: Gateways
) -> None:
    hub = HubPage(page, ready_gateway(gateway({"HUB_JWT_KEY": SECRET})).url).open("?clients=0")
    page.get_by_test_id("presence-token").fill(token([{"match": "https://example.com/x"}]))
    page.get_by_test_id("presence-watch").click()
    status = page.get_by_test_id("presence-status")
    expect(status).to_contain_text("HTTP 403")
    expect(status).to_contain_text("does not allow subscribing")
    expect(page.get_by_test_id("subscription")).to_have_count(0)
    # A refused Mercure subscription is final and its panel says why.
    refused = add_mercure_client_refused(hub, "https://example.com/{broken")
    expect(refused.get_by_test_id("note")).to_contain_text("HTTP 400")


def add_mercure_client_refused(hub: HubPage, patterns: str) -> Locator:
    before = hub.panels.count()
    hub.page.get_by_test_id("mercure-patterns").fill(patterns)
    hub.page.get_by_test_id("add-mercure").click()
    expect(hub.panels).to_have_count(before + 1)
    panel = hub.panel(before)
    expect(panel.get_by_test_id("state")).to_have_text("closed")
    return panel
