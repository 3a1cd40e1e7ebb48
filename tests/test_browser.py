"""The test page in real headless Chromium, against real gateway processes and the real Redis.

Each test leaves screenshots in its `tmp_path` for a person to look at.
"""

# ruff: noqa: F811 - the fixtures `browser` and `page`, imported from browser.py, are parameters

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import httpx
from browser import (  # noqa: F401 (fixtures)
    PHONE,
    HubPage,
    SteadyPublisher,
    browser,
    page,
    parse_id,
    publish_numbered,
    ready_gateway,
    run_cli,
    serve_web_files,
)
from playwright.sync_api import FilePayload, Page, expect
from processes import Gateway, Gateways, Nginx

from hub import cursor

TOPIC = "demo"
"""The page's default topic; each test's gateway has its own key prefix, so topics never mix."""
CLIENTS = 5
SHOWN = 50
"""How many of its latest events a panel lists."""
RELOADS = 4
RELOAD_RATE = 8.0
"""Events per second while the page reloads: slow enough that a panel still lists every event
of its page's life (fewer than SHOWN) when the test looks, a second or so after a reload."""
LOOK_AFTER = 5
"""Events each panel shows in a page's life before the test looks at them."""
RESUMED = re.compile(r"^resumed after (\S+) \(from before the reload\)$")
NEW_EVENTS_ONLY = "new events only"


def open_page(page: Page, gateway: Gateways) -> HubPage:
    hub = HubPage(page, ready_gateway(gateway()).url).open()
    hub.expect_open(3)
    return hub


def five_clients_after_flood(hub: HubPage, redis_url: str, key_prefix: str) -> list[str]:
    """Two more clients on the default topic, then 100 numbered events from the CLI."""
    expect(hub.page.get_by_test_id("add-topics")).to_have_value(TOPIC)
    for _ in range(CLIENTS - 3):
        hub.add_client(TOPIC)
    hub.expect_open(CLIENTS)
    ids = publish_numbered(redis_url, key_prefix, TOPIC, 1, 100)
    assert len(ids) == 100
    hub.expect_all("count", "100", CLIENTS)
    return ids


def assert_in_order(hub: HubPage, index: int, newest_seq: int) -> None:
    """The panel lists its latest events newest first, consecutive, with no gap or duplicate."""
    seqs = hub.shown_seqs(index)
    assert seqs == list(range(newest_seq, newest_seq - len(seqs), -1)), seqs
    assert len(seqs) == 50
    ids = hub.shown_ids(index)
    assert ids == sorted(set(ids), reverse=True), "event IDs must be strictly decreasing"


def test_five_clients_see_a_flood_in_order(
    page: Page, gateway: Gateways, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    hub = open_page(page, gateway)
    ids = five_clients_after_flood(hub, redis_url, key_prefix)

    for testid in ("gaps", "dupes"):
        hub.expect_all(testid, "0", CLIENTS)
    hub.expect_all("health", "✓ in order", CLIENTS)
    hub.expect_all("last-id", ids[-1], CLIENTS)
    for index in range(CLIENTS):
        assert_in_order(hub, index, 100)
        assert hub.shown_ids(index)[0] == parse_id(ids[-1])
    expect(hub.summary("total-delivered")).to_have_text(str(100 * CLIENTS))
    expect(hub.summary("lag")).to_have_text(["0"] * CLIENTS)
    hub.screenshot(tmp_path / "five-clients-after-flood.png")

    # The same page on a phone: one column, nothing wider than the screen.
    page.set_viewport_size(PHONE)
    expect(hub.panel(0)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=tmp_path / "phone.png")


def test_a_client_resumes_from_its_cursor_without_duplicates(
    page: Page, gateway: Gateways, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    hub = open_page(page, gateway)
    five_clients_after_flood(hub, redis_url, key_prefix)
    away = hub.panel(1)
    away.get_by_test_id("disconnect").click()
    expect(away.get_by_test_id("state")).to_have_text("closed")

    ids = publish_numbered(redis_url, key_prefix, TOPIC, 101, 120)
    others = [i for i in range(CLIENTS) if i != 1]
    for index in others:
        expect(hub.panel(index).get_by_test_id("count")).to_have_text("120")
    expect(away.get_by_test_id("count")).to_have_text("100")
    hub.screenshot(tmp_path / "one-client-away.png")

    away.get_by_test_id("resume").click()
    hub.expect_all("count", "120", CLIENTS)
    hub.expect_all("state", "open", CLIENTS)
    hub.expect_all("dupes", "0", CLIENTS)
    hub.expect_all("gaps", "0", CLIENTS)
    hub.expect_all("last-id", ids[-1], CLIENTS)
    for index in range(CLIENTS):
        assert_in_order(hub, index, 120)
    expect(hub.summary("total-delivered")).to_have_text(str(120 * CLIENTS))
    hub.screenshot(tmp_path / "resumed.png")


def listed_since_load(hub: HubPage, index: int, after: int, at_least: int = LOOK_AFTER) -> int:
    """Once the panel shows `at_least` events, every event it was handed since the page
    (re)loaded is listed: the ones right after seq `after`, in order, none flagged.
    Returns the newest one's seq."""
    expect(hub.shown_events(index).nth(at_least - 1)).to_be_attached()
    seqs = hub.shown_seqs(index)
    assert len(seqs) < SHOWN, f"panel {index}: too many events to see this page's first one"
    assert seqs == list(range(after + len(seqs), after, -1)), (index, after, seqs)
    expect(hub.panel(index).get_by_test_id("health")).to_have_text("✓ in order")
    return seqs[0]


def resumed_after(hub: HubPage, steady: SteadyPublisher) -> list[int]:
    """The seq of the event after which each panel says it resumed."""
    starts = hub.in_panels("start")
    expect(starts).to_have_text([RESUMED] * 3)
    seqs = []
    for text in starts.all_inner_texts():
        found = RESUMED.fullmatch(text)
        assert found is not None, text
        seqs.append(steady.seq_of(found.group(1)))
    return seqs


def test_each_panel_resumes_after_a_reload_where_it_left_off(
    page: Page, gateway: Gateways, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """Reloads while events keep coming: each page's panels list what the panels before the
    reload had not, from the very next event on. (Events that arrive between the test's
    last look and the reload are not seen by the test: the cursor may be a little further.)"""
    hub = open_page(page, gateway)
    expect(hub.in_panels("start")).to_have_text([NEW_EVENTS_ONLY] * 3)
    with SteadyPublisher(redis_url, key_prefix, TOPIC, RELOAD_RATE) as steady:
        # The panels' streams are open: from here on, nothing can be missed.
        steady.start()
        after = [0] * 3
        for _ in range(RELOADS):
            seen = [listed_since_load(hub, index, after[index]) for index in range(3)]
            hub.reload()
            after = resumed_after(hub, steady)
            assert all(a >= s for a, s in zip(after, seen, strict=True)), (after, seen)
        for index in range(3):
            listed_since_load(hub, index, after[index])
        steady.stop()

    hub.expect_open(3)
    hub.expect_all("last-id", steady.ids[-1], 3)
    newest = [listed_since_load(hub, index, after[index], at_least=1) for index in range(3)]
    assert newest == [len(steady.ids)] * 3
    hub.expect_all("gaps", "0", 3)
    hub.expect_all("dupes", "0", 3)
    expect(hub.summary("lag")).to_have_text(["0"] * 3)
    hub.screenshot(tmp_path / "after-reloads.png")


def test_start_fresh_and_removing_a_panel_forget_its_cursor(
    page: Page, gateway: Gateways, redis_url: str, key_prefix: str
) -> None:
    hub = open_page(page, gateway)
    ids = publish_numbered(redis_url, key_prefix, TOPIC, 1, 3)
    hub.expect_all("count", "3", 3)
    hub.panel(0).get_by_test_id("fresh").click()
    expect(hub.panel(0).get_by_test_id("count")).to_have_text("0")
    expect(hub.panel(0).get_by_test_id("start")).to_have_text(NEW_EVENTS_ONLY)
    hub.panel(2).get_by_test_id("remove").click()
    expect(hub.panels).to_have_count(2)

    # The page makes its three panels again; only the one left as it was resumes.
    hub.reload()
    resumed = f"resumed after {ids[-1]} (from before the reload)"
    expect(hub.in_panels("start")).to_have_text([NEW_EVENTS_ONLY, resumed, NEW_EVENTS_ONLY])
    hub.expect_open(3)
    publish_numbered(redis_url, key_prefix, TOPIC, 4, 5)
    hub.expect_all("count", "2", 3)
    hub.expect_all("gaps", "0", 3)

    # Another tab of the page keeps cursors of its own.
    other = HubPage(page.context.new_page(), hub.base_url).open()
    expect(other.in_panels("start")).to_have_text([NEW_EVENTS_ONLY] * 3)
    other.page.close()


def test_the_page_warns_of_the_browsers_connection_limit_over_http_1_1(
    page: Page, gateway: Gateways
) -> None:
    hub = HubPage(page, ready_gateway(gateway()).url).open("?clients=5")
    note = page.get_by_test_id("connection-note")
    expect(hub.panels).to_have_count(5)
    expect(note).to_be_hidden()
    hub.add_client(TOPIC)
    expect(note).to_be_visible()
    expect(note).to_contain_text("at most 6 connections")
    expect(note).to_contain_text("Over HTTPS with HTTP/2 there is no such limit")


def test_a_binary_event_downloads_byte_exact(
    page: Page, gateway: Gateways, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    hub = open_page(page, gateway)
    # Every byte value, and bytes that are not valid UTF-8.
    payload = bytes(range(256)) * 40 + os.urandom(4096) + b"\xff\xfe\x00end"
    source = tmp_path / "sample report.bin"
    source.write_bytes(payload)
    [event_id] = run_cli(["file", TOPIC, str(source)], redis_url, key_prefix)

    hub.expect_all("count", "1", 3)
    expect(hub.in_panels("size")).to_have_text([f"{len(payload) / 1024:.1f} KiB"] * 3)
    for index in range(3):
        link = hub.panel(index).get_by_test_id("download")
        expect(link).to_have_attribute("download", source.name)
        with page.expect_download() as started:
            link.click()
        download = started.value
        assert download.suggested_filename == source.name
        saved = tmp_path / f"download-{index}.bin"
        download.save_as(saved)
        assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(payload).digest()
    hub.expect_all("last-id", event_id, 3)
    hub.screenshot(tmp_path / "binary-event.png")


def test_the_publish_form_sends_events_every_panel_shows(
    page: Page, gateway: Gateways, tmp_path: Path
) -> None:
    token = "form-token-" + os.urandom(6).hex()
    hub = HubPage(page, ready_gateway(gateway({"HUB_PUBLISH_TOKEN": token})).url).open()
    hub.expect_open(3)
    status = page.get_by_test_id("publish-status")
    expect(page.get_by_test_id("publish-topic")).to_have_value(TOPIC)
    page.get_by_test_id("publish-data").fill('{"greeting": "hello from the form"}')
    page.get_by_test_id("publish-count").fill("10")

    page.get_by_test_id("publish-token").fill("not-the-token")
    page.get_by_test_id("publish-send").click()
    expect(status).to_contain_text("HTTP 401: the token is not valid")
    hub.expect_all("count", "0", 3)

    page.get_by_test_id("publish-token").fill(token)
    page.get_by_test_id("publish-send").click()
    expect(status).to_contain_text("Sent 10 events to demo")
    hub.expect_all("count", "10", 3)
    hub.expect_all("gaps", "0", 3)
    hub.expect_all("dupes", "0", 3)
    expect(hub.summary("published")).to_have_text("10")
    expect(hub.summary("lag")).to_have_text(["0"] * 3)
    for index in range(3):
        assert hub.shown_seqs(index) == list(range(10, 0, -1))
        newest = hub.shown_events(index).first
        # Pretty-printed JSON: one key per line.
        expect(newest.locator("pre")).to_contain_text('"greeting": "hello from the form"')
        expect(newest.locator("pre")).to_contain_text('\n  "seq": 10,\n')

    # A single event with a type of its own: the page listens for types it publishes.
    page.get_by_test_id("publish-count").fill("1")
    page.get_by_test_id("publish-type").fill("greeting")
    page.get_by_test_id("publish-data").fill("plain text, once")
    page.get_by_test_id("publish-send").click()
    expect(status).to_contain_text("Sent 1 event to demo")
    hub.expect_all("count", "11", 3)
    for index in range(3):
        newest = hub.shown_events(index).first
        expect(newest).to_contain_text("greeting")
        expect(newest.locator("pre")).to_have_text("plain text, once")

    # A file chosen in the form travels as a binary event and downloads byte-exact.
    payload = bytes(range(256)) * 3 + os.urandom(1000)
    chosen: FilePayload = {
        "name": "from form.bin",
        "mimeType": "application/octet-stream",
        "buffer": payload,
    }
    page.get_by_test_id("publish-file-input").set_input_files(files=[chosen])
    page.get_by_test_id("publish-file").click()
    expect(status).to_contain_text("Sent from form.bin")
    hub.expect_all("count", "12", 3)
    with page.expect_download() as started:
        hub.panel(2).get_by_test_id("download").first.click()
    assert started.value.suggested_filename == "from form.bin"
    saved = tmp_path / "from-form.bin"
    started.value.save_as(saved)
    assert saved.read_bytes() == payload
    hub.screenshot(tmp_path / "publish-form.png")


def test_a_cursor_older_than_the_history_shows_a_stream_reset(
    page: Page, gateway: Gateways, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    hub = open_page(page, gateway)
    publish_numbered(redis_url, key_prefix, TOPIC, 1, 5)
    hub.expect_all("count", "5", 3)
    away = hub.panel(0)
    away.get_by_test_id("disconnect").click()
    expect(away.get_by_test_id("state")).to_have_text("closed")
    # A short history: trimming (approximate, whole stream nodes) drops the events after the cursor.
    publish_numbered(redis_url, key_prefix, TOPIC, 6, 305, env={"HUB_RETENTION_MAXLEN": "10"})
    expect(hub.panel(1).get_by_test_id("count")).to_have_text("305")

    away.get_by_test_id("resume").click()
    expect(away.get_by_test_id("state")).to_have_text("open")
    expect(away.get_by_test_id("warning")).to_contain_text(f"Stream reset on {TOPIC}")
    expect(away.get_by_test_id("gaps")).to_have_text("1")
    expect(away.get_by_test_id("health")).to_contain_text("missing")
    expect(away.get_by_test_id("dupes")).to_have_text("0")
    assert hub.shown_seqs(0)[0] == 305
    for index in (1, 2):
        expect(hub.panel(index).get_by_test_id("health")).to_have_text("✓ in order")
        expect(hub.panel(index).get_by_test_id("warnings")).to_be_empty()
    hub.screenshot(tmp_path / "stream-reset.png")


def test_the_page_reads_the_hubs_cursors_and_spots_gaps_and_duplicates(page: Page) -> None:
    """The page's own modules, in the browser, against the hub's cursor encoder."""
    page.goto(serve_web_files(page) + "/")
    cases = [
        [(1_700_000_000_000, 3)],
        [(1_700_000_000_000, 3), (1_699_999_999_000, 0), (0, 0)],
        [(1_800_000_000_123, 17), (1_800_000_000_123, 0)],
    ]
    cursors = [cursor.encode(positions) for positions in cases]
    decoded = page.evaluate(
        """async (cursors) => {
            const { decodeCursor } = await import("./cursor.js");
            return cursors.map(([text, n]) => decodeCursor(text, n));
        }""",
        [[text, len(positions)] for text, positions in zip(cursors, cases, strict=True)],
    )
    assert decoded == [[list(p) for p in positions] for positions in cases]
    assert (
        page.evaluate(
            """async () => (await import("./cursor.js")).decodeCursor("not-a-cursor", 2)"""
        )
        is None
    )

    # Run "a": 1 2 4 (a gap of one), 4 again (a duplicate), 3 (late, so nothing is missing).
    # Run "b" starts at 1; a redelivered event is a duplicate whatever its seq. Without a
    # run, seq 1 on a new event after 5 starts a new sequence.
    flags = page.evaluate(
        """async () => {
            const { DeliveryCheck } = await import("./sequence.js");
            const check = new DeliveryCheck();
            const see = (seq, run, redelivered = false) =>
                check.observe({ topic: "t", redelivered, seq, run })?.kind ?? "ok";
            const kinds = [1, 2, 4, 4, 3].map((seq) => see(seq, "a"));
            kinds.push(see(1, "b"), see(2, "b", true), see(5, null), see(1, null));
            return { kinds, gaps: check.gaps, missing: check.missing, dupes: check.dupes };
        }"""
    )
    assert flags == {
        "kinds": ["ok", "ok", "gap", "dupe", "order", "ok", "dupe", "ok", "ok"],
        "gaps": 1,
        "missing": 0,
        "dupes": 2,
    }


def test_failed_streams_are_retried_or_explained(
    page: Page, gateway: Gateways, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    hub_url = ready_gateway(gateway({"HUB_MAX_TOPICS": "2"})).url
    # A proxy in front of the hub answering 502: EventSource alone would give up for good.
    page.route("**/events?*", lambda route: route.fulfill(status=502, body="bad gateway"))
    hub = HubPage(page, hub_url).open()
    hub.expect_all("state", "reconnecting", 3)
    expect(hub.in_panels("note")).to_contain_text(["HTTP 502: bad gateway"] * 3)
    page.unroute("**/events?*")
    hub.expect_open(3)
    publish_numbered(redis_url, key_prefix, TOPIC, 1, 1)
    hub.expect_all("count", "1", 3)

    # A request the hub refuses (4xx) is final, and the panel says why.
    hub.add_client("a b c")
    refused = hub.panel(3)
    expect(refused.get_by_test_id("state")).to_have_text("closed")
    expect(refused.get_by_test_id("note")).to_contain_text("HTTP 400")
    expect(refused.get_by_test_id("note")).to_contain_text("over the limit of 2")
    hub.screenshot(tmp_path / "failed-streams.png")


def test_panels_come_back_by_themselves_when_their_gateway_is_killed(
    page: Page, gateway: Gateways, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The scaled-out topology: the page through nginx, and the gateway its streams use dies."""
    gateways = [ready_gateway(g) for g in gateway.many(2, {"HUB_RETRY_MS": "500"})]
    nginx = Nginx(tmp_path / "nginx", gateways).start()
    try:
        hub = HubPage(page, nginx.url).open()
        hub.expect_open(3)
        publish_numbered(redis_url, key_prefix, TOPIC, 1, 50)
        hub.expect_all("count", "50", 3)

        def streams(on: Gateway) -> float:
            metrics = httpx.get(f"{on.url}/metrics").text
            return float(
                next(
                    line.split()[1]
                    for line in metrics.splitlines()
                    if line.startswith("hub_connected_clients ")
                )
            )

        victim = max(gateways, key=streams)
        assert streams(victim) > 0
        victim.kill()
        ids = publish_numbered(redis_url, key_prefix, TOPIC, 51, 100)
        hub.expect_all("count", "100", 3)
        hub.expect_all("state", "open", 3)
        hub.expect_all("gaps", "0", 3)
        hub.expect_all("dupes", "0", 3)
        hub.expect_all("last-id", ids[-1], 3)
        for index in range(3):
            assert_in_order(hub, index, 100)
        hub.screenshot(tmp_path / "after-gateway-killed.png")
    finally:
        nginx.close()
