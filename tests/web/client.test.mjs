// One native panel's subscriber (web/client.js) over HubStream: which topic each
// event belongs to, told from how its cursor moved; the stream-reset notice; and
// the cursor kept under the panel's key, so that a reload resumes where it left off.
// EventSource, fetch and storage are stand-ins.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { CURSOR_KEY_PREFIX, HubClient, RESET_EVENT_TYPE, SHOWN_EVENTS, resetWarning } from "../../web/client.js";
import { parseResetNotice as readResetNotice } from "../../web/sse-hub.js";
import { formatId } from "../../web/cursor.js";
import { MemoryStorage, composite } from "./doubles.mjs";
import { FakeEventSource } from "./fake-event-source.mjs";

const HUB = "https://hub.test/events";

/** A client connected as the page connects it; `source()` is its current EventSource. */
async function makeClient({ id = 1, topics = ["t"], types = [], newest = {}, storage = new MemoryStorage() } = {}) {
  const seen = [];
  const client = new HubClient({
    id,
    topics,
    types,
    url: HUB,
    storage,
    onChange: () => {},
    onEvent: (topic, eventId) => seen.push([topic, formatId(eventId)]),
    newestId: (topic) => newest[topic] ?? null,
  });
  client.connect();
  await null; // HubStream connects once its listeners are on
  return { client, seen, storage, source: () => FakeEventSource.made.at(-1) };
}

const cursorOf = (source) => new URL(source.url).searchParams.get("last_event_id");

let saved;
beforeEach(() => {
  saved = { EventSource: globalThis.EventSource, fetch: globalThis.fetch };
  globalThis.EventSource = FakeEventSource;
  FakeEventSource.made = [];
});
afterEach(() => {
  Object.assign(globalThis, saved);
});

/** A notice's data as the panel shows it: read by the client, then given the panel's defaults. */
const parseResetNotice = (data) => resetWarning(readResetNotice(data));

describe("a stream-reset notice on a panel", () => {
  test("reads the hub's notice", () => {
    assert.deepEqual(parseResetNotice('{"topic":"news","reason":"history-truncated","first_kept":"1700000000000-0"}'), {
      topic: "news",
      reason: "history-truncated",
      firstKept: "1700000000000-0",
    });
    assert.equal(parseResetNotice('{"topic":"news","reason":"history-truncated","first_kept":""}').firstKept, "");
  });

  test("shows what it can of anything else", () => {
    const unknown = { topic: "?", reason: "history truncated", firstKept: "" };
    for (const data of ["", "not json", "null", "7", "[]", "{}"]) assert.deepEqual(parseResetNotice(data), unknown, data);
    assert.deepEqual(parseResetNotice('{"topic": 5, "first_kept": null}'), { ...unknown, topic: "5" });
  });
});

describe("HubClient", () => {
  test("subscribes through HubStream to its topics sorted and once each, new events only", async () => {
    const { client, source } = await makeClient({ topics: ["b", "a/b", "b", "a"] });
    assert.deepEqual(client.topics, ["a", "a/b", "b"]);
    assert.equal(FakeEventSource.made.length, 1);
    assert.equal(source().url, `${HUB}?topic=a&topic=a%2Fb&topic=b`);
    assert.equal(client.state, "connecting");
    assert.equal(client.note, "new events only");
    assert.equal(client.start, "new events only");
    source().emit("open");
    assert.equal(client.state, "open");
  });

  test("one topic: each new stream ID is an event of that topic", async () => {
    const { client, source, seen } = await makeClient({ topics: ["t"] });
    source().emit("message", '{"seq":1}', "9-0");
    source().emit("message", '{"seq":2}', "10-0");
    assert.deepEqual(seen, [["t", "9-0"], ["t", "10-0"]]);
    assert.equal(client.count, 2);
    assert.equal(client.lastEventId, "10-0");
    assert.deepEqual({ gaps: client.check.gaps, dupes: client.check.dupes }, { gaps: 0, dupes: 0 });
  });

  test("a stream ID not after the last one never reaches the client: HubStream drops it", async () => {
    const { client, source, seen } = await makeClient({ topics: ["t"] });
    source().emit("message", "a", "10-0");
    source().emit("message", "b", "10-0");
    source().emit("message", "c", "9-5");
    assert.deepEqual(seen, [["t", "10-0"]]);
    assert.equal(client.count, 1);
  });

  test("several topics: the topic whose position moved", async () => {
    const { source, seen } = await makeClient({ topics: ["b", "a"] });
    // The first event moves every position: the newest is the event.
    source().emit("message", "x", composite([[1000, 0], [1500, 2]]));
    source().emit("message", "y", composite([[1600, 0], [1500, 2]]));
    source().emit("message", "z", composite([[1600, 0], [1600, 1]]));
    assert.deepEqual(seen, [["b", "1500-2"], ["a", "1600-0"], ["b", "1600-1"]]);
  });

  test("an event without a cursor it can read is counted but not placed", async () => {
    const one = await makeClient({ topics: ["t"] });
    one.source().emit("message", "x", "");
    assert.equal(one.client.count, 1);
    assert.deepEqual(one.seen, []);
    assert.equal(one.client.takePending()[0].topic, "t");
    const two = await makeClient({ topics: ["a", "b"] });
    two.source().emit("message", "x", "1-0");
    assert.equal(two.client.count, 1);
    assert.equal(two.client.takePending()[0].topic, null);
  });

  test("gaps and duplicates in the data's seq are flagged on the shown event", async () => {
    const { client, source } = await makeClient();
    source().emit("message", '{"seq":1}', "1-0");
    source().emit("message", '{"seq":4}', "2-0");
    source().emit("message", '{"seq":4}', "3-0");
    const shown = client.takePending();
    assert.deepEqual(shown.map((r) => r.flag), [null, { kind: "gap", missing: 2 }, { kind: "dupe" }]);
    assert.deepEqual(client.takePending(), []);
    assert.deepEqual([client.check.missing, client.check.dupes], [2, 1]);
  });

  test("keeps only the latest events to show", async () => {
    const { client, source } = await makeClient();
    for (let i = 1; i <= SHOWN_EVENTS + 5; i++) source().emit("message", "x", `${i}-0`);
    const shown = client.takePending();
    assert.equal(shown.length, SHOWN_EVENTS);
    assert.equal(shown[0].id, "6-0");
  });

  test("a stream-reset notice becomes a warning, and is not an event", async () => {
    const { client, source, seen } = await makeClient({ topics: ["news"] });
    source().emit(RESET_EVENT_TYPE, '{"topic":"news","reason":"history-truncated","first_kept":"50-0"}');
    assert.equal(client.count, 0);
    assert.deepEqual(seen, []);
    assert.deepEqual(
      client.warnings.map(({ topic, reason, firstKept }) => ({ topic, reason, firstKept })),
      [{ topic: "news", reason: "history-truncated", firstKept: "50-0" }],
    );
    assert.equal(client.takePending()[0].kind, "reset");
    for (let i = 0; i < 5; i++) source().emit(RESET_EVENT_TYPE, "{}");
    assert.equal(client.warnings.length, 3);
    assert.deepEqual([client.warnings[0].topic, client.warnings[0].reason], ["?", "history truncated"]);
  });

  test("a new type: a new stream that resumes after the cursor; known types change nothing", async () => {
    const { client, source } = await makeClient({ types: ["price", "message", RESET_EVENT_TYPE, "price"] });
    const first = source();
    for (const type of ["message", RESET_EVENT_TYPE, "price"]) assert.equal(first.listenerCount(type), 1, type);
    first.emit("message", "m", "1-0");
    for (const type of ["price", "message", RESET_EVENT_TYPE, ""]) client.listen(type);
    assert.equal(FakeEventSource.made.length, 1);

    client.listen("trade");
    await null;
    const second = source();
    assert.notEqual(second, first);
    assert.equal(first.readyState, FakeEventSource.CLOSED);
    assert.equal(cursorOf(second), "1-0");
    for (const type of ["message", RESET_EVENT_TYPE, "price", "trade"]) assert.equal(second.listenerCount(type), 1, type);
    first.emit("message", "stale", "2-0");
    second.emit("price", "p", "2-0");
    second.emit("trade", "t", "3-0");
    assert.equal(client.count, 3);
    assert.deepEqual(client.takePending().map((r) => r.type), ["message", "price", "trade"]);
  });

  test("disconnect closes; resume continues after the last event on a new stream", async () => {
    const { client, source } = await makeClient();
    const first = source();
    first.emit("message", "x", "5-0");
    client.disconnect();
    assert.deepEqual([client.state, client.note], ["closed", "disconnected"]);
    assert.equal(first.readyState, FakeEventSource.CLOSED);
    client.listen("later"); // while disconnected: only for the next stream
    assert.equal(FakeEventSource.made.length, 1);
    client.resume();
    await null;
    assert.equal(cursorOf(source()), "5-0");
    assert.equal(source().listenerCount("later"), 1);
    first.emit("message", "stale", "6-0");
    assert.equal(client.count, 1);
    source().emit("open");
    source().emit("message", "y", "6-0");
    assert.deepEqual([client.state, client.count, client.lastEventId], ["open", 2, "6-0"]);
  });

  test("a panel made again with its number and topics resumes after the last event handed over", async () => {
    const storage = new MemoryStorage();
    const before = await makeClient({ id: 2, topics: ["b", "a"], storage });
    const last = composite([[1600, 0], [1500, 2]]);
    before.source().emit("message", "x", composite([[1000, 0], [1500, 2]]));
    before.source().emit("message", "y", last);
    assert.equal(storage.getItem(`${CURSOR_KEY_PREFIX}2:a b`), last);

    // The reload: the page is gone without a word, and makes its panels again.
    const after = await makeClient({ id: 2, topics: ["a", "b"], storage, newest: { a: [1700n, 0n] } });
    assert.equal(cursorOf(after.source()), last);
    assert.equal(after.client.start, `resumed after ${last} (from before the reload)`);
    assert.equal(after.client.note, `resuming after ${last}`);
    assert.deepEqual([after.client.count, after.client.lastEventId], [0, last]);
    // Its positions are the cursor's: the next event is placed, and the lag measured, from there.
    assert.deepEqual(after.client.positions.get("a"), [1600n, 0n]);
    after.source().emit("message", "z", composite([[1600, 0], [1600, 1]]));
    assert.deepEqual(after.seen, [["b", "1600-1"]]);

    for (const other of [{ id: 3, topics: ["a", "b"] }, { id: 2, topics: ["a"] }]) {
      const { client, source } = await makeClient({ ...other, storage });
      assert.equal(cursorOf(source()), null);
      assert.equal(client.start, "new events only");
    }
  });

  test("start fresh forgets the cursor: counters cleared, new events only, lag from the newest ID then", async () => {
    const newest = {};
    const { client, source, storage } = await makeClient({ newest });
    source().emit("message", "x", "5-0");
    newest.t = [7n, 0n];
    client.fresh();
    await null;
    assert.equal(storage.getItem(`${CURSOR_KEY_PREFIX}1:t`), null);
    assert.deepEqual([client.count, client.lastEventId, client.start], [0, "", "new events only"]);
    assert.deepEqual(client.baseline.get("t"), [7n, 0n]);
    assert.equal(source().url, `${HUB}?topic=t`);
    assert.equal(FakeEventSource.made[0].readyState, FakeEventSource.CLOSED);
  });

  test("a removed panel forgets its cursor", async () => {
    const { client, source, storage } = await makeClient();
    source().emit("message", "x", "5-0");
    client.dispose();
    assert.equal(source().readyState, FakeEventSource.CLOSED);
    assert.equal(storage.items.size, 0);
  });

  test("without storage the page still resumes exactly, from memory", async () => {
    // No sessionStorage here, as where a browser forbids it.
    const client = new HubClient({ id: 1, topics: ["t"], url: HUB, onChange: () => {} });
    client.connect();
    await null;
    FakeEventSource.made.at(-1).emit("message", "x", "5-0");
    client.resume();
    await null;
    assert.equal(cursorOf(FakeEventSource.made.at(-1)), "5-0");
  });

  test("a stream the hub refuses is closed with the hub's reason", async () => {
    globalThis.fetch = async () => new Response("too many topics: 3 is over the limit of 2\n", { status: 400 });
    const { client, source } = await makeClient({ topics: ["a", "b", "c"] });
    source().readyState = FakeEventSource.CLOSED;
    source().emit("error");
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual([client.state, client.note], ["closed", "HTTP 400: too many topics: 3 is over the limit of 2"]);
  });
});
