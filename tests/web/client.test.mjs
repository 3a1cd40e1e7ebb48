// One subscriber (web/client.js): the stream-reset notice, and which topic each
// event belongs to, told from how its cursor moved. EventSource is a stand-in.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { HubClient, RESET_EVENT_TYPE, SHOWN_EVENTS, parseResetNotice } from "../../web/client.js";
import { formatId } from "../../web/cursor.js";
import { FakeEventSource } from "./fake-event-source.mjs";

/** A composite cursor as hub/cursor.py encodes it; positions are [ms, seq] numbers. */
function composite(positions) {
  const base = Math.max(...positions.map(([ms]) => ms));
  return [base.toString(36), ...positions.map(([ms, seq]) => (base - ms).toString(36) + (seq ? `-${seq.toString(36)}` : ""))].join(".");
}

function makeClient({ topics = ["t"], types = [], newest = {} } = {}) {
  const seen = [];
  let changes = 0;
  const client = new HubClient({
    id: 1,
    topics,
    types,
    onChange: () => changes++,
    onEvent: (topic, id) => seen.push([topic, formatId(id)]),
    newestId: (topic) => newest[topic] ?? null,
  });
  client.connect();
  const source = FakeEventSource.made.at(-1);
  return { client, source, seen, changes: () => changes };
}

let savedEventSource;
beforeEach(() => {
  savedEventSource = globalThis.EventSource;
  globalThis.EventSource = FakeEventSource;
  FakeEventSource.made = [];
});
afterEach(() => {
  globalThis.EventSource = savedEventSource;
});

describe("parseResetNotice", () => {
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
  test("subscribes to its topics sorted and once each, resuming from a cursor when given one", () => {
    const { client, source } = makeClient({ topics: ["b", "a/b", "b", "a"] });
    assert.deepEqual(client.topics, ["a", "a/b", "b"]);
    assert.equal(source.url, "events?topic=a&topic=a%2Fb&topic=b");
    assert.equal(client.url("z.0.0-1.0"), "events?topic=a&topic=a%2Fb&topic=b&last_event_id=z.0.0-1.0");
    assert.equal(client.state, "connecting");
  });

  test("one topic: each new stream ID is an event of that topic", () => {
    const { client, source, seen } = makeClient({ topics: ["t"] });
    source.emit("message", '{"seq":1}', "9-0");
    source.emit("message", '{"seq":2}', "10-0");
    assert.deepEqual(seen, [["t", "9-0"], ["t", "10-0"]]);
    assert.equal(client.count, 2);
    assert.equal(client.lastEventId, "10-0");
    assert.deepEqual({ gaps: client.check.gaps, dupes: client.check.dupes }, { gaps: 0, dupes: 0 });
  });

  test("one topic: a stream ID not after the last one is a redelivery", () => {
    const { client, source, seen } = makeClient({ topics: ["t"] });
    source.emit("message", "a", "10-0");
    source.emit("message", "b", "10-0");
    source.emit("message", "c", "9-5");
    assert.deepEqual(seen, [["t", "10-0"]]);
    assert.equal(client.count, 3);
    assert.equal(client.check.dupes, 2);
  });

  test("several topics: the topic whose position moved", () => {
    const { client, source, seen } = makeClient({ topics: ["b", "a"] });
    // The first event moves every position: the newest is the event.
    source.emit("message", "x", composite([[1000, 0], [1500, 2]]));
    source.emit("message", "y", composite([[1600, 0], [1500, 2]]));
    source.emit("message", "z", composite([[1600, 0], [1600, 1]]));
    assert.deepEqual(seen, [["b", "1500-2"], ["a", "1600-0"], ["b", "1600-1"]]);
    source.emit("message", "again", composite([[1600, 0], [1600, 1]]));
    assert.equal(client.check.dupes, 1);
    assert.equal(seen.length, 3);
  });

  test("an event without a cursor it can read is counted but not placed", () => {
    const one = makeClient({ topics: ["t"] });
    one.source.emit("message", "x", "");
    assert.equal(one.client.count, 1);
    assert.deepEqual(one.seen, []);
    assert.equal(one.client.takePending()[0].topic, "t");
    const two = makeClient({ topics: ["a", "b"] });
    two.source.emit("message", "x", "1-0");
    assert.equal(two.client.count, 1);
    assert.equal(two.client.takePending()[0].topic, null);
  });

  test("gaps in the data's seq are flagged on the shown event", () => {
    const { client, source } = makeClient();
    source.emit("message", '{"seq":1}', "1-0");
    source.emit("message", '{"seq":4}', "2-0");
    const shown = client.takePending();
    assert.deepEqual(shown.map((r) => r.flag), [null, { kind: "gap", missing: 2 }]);
    assert.deepEqual(client.takePending(), []);
    assert.equal(client.check.missing, 2);
  });

  test("keeps only the latest events to show", () => {
    const { client, source } = makeClient();
    for (let i = 1; i <= SHOWN_EVENTS + 5; i++) source.emit("message", "x", `${i}-0`);
    const shown = client.takePending();
    assert.equal(shown.length, SHOWN_EVENTS);
    assert.equal(shown[0].id, "6-0");
  });

  test("a stream-reset notice becomes a warning, and is not an event", () => {
    const { client, source, seen } = makeClient({ topics: ["news"] });
    source.emit(RESET_EVENT_TYPE, '{"topic":"news","reason":"history-truncated","first_kept":"50-0"}');
    assert.equal(client.count, 0);
    assert.deepEqual(seen, []);
    assert.deepEqual(
      client.warnings.map(({ topic, reason, firstKept }) => ({ topic, reason, firstKept })),
      [{ topic: "news", reason: "history-truncated", firstKept: "50-0" }],
    );
    for (let i = 0; i < 5; i++) source.emit(RESET_EVENT_TYPE, "{}");
    assert.equal(client.warnings.length, 3);
  });

  test("named types get a listener each, once, and never a second one for message or stream-reset", () => {
    const { client, source } = makeClient({ types: ["price", "message", "price"] });
    client.listen("price");
    client.listen("message");
    client.listen(RESET_EVENT_TYPE);
    client.listen("");
    client.listen("trade");
    for (const type of ["message", RESET_EVENT_TYPE, "price", "trade"]) assert.equal(source.listenerCount(type), 1, type);
    source.emit("message", "m", "1-0");
    source.emit("price", "p", "2-0");
    source.emit("trade", "t", "3-0");
    assert.equal(client.count, 3);
    assert.equal(client.check.dupes, 0);
    source.emit(RESET_EVENT_TYPE, "{}");
    assert.equal(client.warnings.length, 1);
  });

  test("events from a replaced connection are ignored; resume continues from the last ID", () => {
    const { client, source } = makeClient();
    source.emit("message", "x", "5-0");
    client.resume();
    const resumed = FakeEventSource.made.at(-1);
    assert.notEqual(resumed, source);
    assert.equal(source.readyState, FakeEventSource.CLOSED);
    assert.equal(resumed.url, "events?topic=t&last_event_id=5-0");
    source.emit("message", "stale", "6-0");
    assert.equal(client.count, 1);
    resumed.emit("open");
    assert.equal(client.state, "open");
    client.disconnect();
    assert.equal(client.state, "closed");
    assert.equal(resumed.readyState, FakeEventSource.CLOSED);
  });

  test("fresh starts over: counters cleared, the lag measured from the newest ID then", () => {
    const newest = {};
    const { client, source } = makeClient({ newest });
    source.emit("message", "x", "5-0");
    newest.t = [7n, 0n];
    client.fresh();
    assert.equal(client.count, 0);
    assert.equal(client.lastEventId, "");
    assert.deepEqual(client.baseline.get("t"), [7n, 0n]);
    assert.equal(FakeEventSource.made.at(-1).url, "events?topic=t");
  });
});
