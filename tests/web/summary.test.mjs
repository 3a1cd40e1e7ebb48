// The summary's counting: the newest event IDs per topic and each client's lag (web/summary.js).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { formatId, parseId } from "../../web/cursor.js";
import { TopicLog, lagOf } from "../../web/summary.js";

const id = parseId;

function logOf(entries) {
  const log = new TopicLog();
  for (const [topic, text] of entries) log.add(topic, id(text));
  return log;
}

function client(topics, positions = {}, baseline = {}) {
  const map = (o) => new Map(Object.entries(o).map(([topic, text]) => [topic, text === null ? null : id(text)]));
  return { topics, positions: map(positions), baseline: map(baseline) };
}

describe("TopicLog", () => {
  test("the newest ID per topic, by integer order", () => {
    const log = logOf([["a", "9-0"], ["a", "10-0"], ["a", "9-5"], ["b", "1-1"]]);
    assert.equal(formatId(log.newest("a")), "10-0");
    assert.equal(formatId(log.newest("b")), "1-1");
    assert.equal(log.newest("c"), null);
  });

  test("counts the IDs after one, each ID once, whatever order they came in", () => {
    const log = logOf([["a", "5-0"], ["a", "3-0"], ["a", "4-0"], ["a", "4-0"], ["a", "5-0"], ["a", "4-1"]]);
    assert.deepEqual(log.countAfter("a", id("3-0")), { count: 3, atLeast: false });
    assert.deepEqual(log.countAfter("a", id("4-0")), { count: 2, atLeast: false });
    assert.deepEqual(log.countAfter("a", id("4-5")), { count: 1, atLeast: false });
    assert.deepEqual(log.countAfter("a", id("5-0")), { count: 0, atLeast: false });
    assert.deepEqual(log.countAfter("a", null), { count: 4, atLeast: false });
    assert.deepEqual(log.countAfter("nothing", id("1-0")), { count: 0, atLeast: false });
  });

  test("keeps IDs beyond 2^53 apart", () => {
    const log = logOf([["a", "9007199254740992-0"], ["a", "9007199254740993-0"]]);
    assert.deepEqual(log.countAfter("a", id("9007199254740992-0")), { count: 1, atLeast: false });
  });

  test("forgets the oldest IDs past 10 000 and then says 'at least'", () => {
    const log = new TopicLog();
    for (let i = 1; i <= 10_001; i++) log.add("a", [BigInt(i), 0n]);
    // The oldest 1 001 went: 9 000 are left (1 002-0 to 10 001-0).
    assert.deepEqual(log.countAfter("a", null), { count: 9_000, atLeast: true });
    assert.deepEqual(log.countAfter("a", id("1-0")), { count: 9_000, atLeast: true });
    assert.deepEqual(log.countAfter("a", id("10000-0")), { count: 1, atLeast: false });
    assert.equal(formatId(log.newest("a")), "10001-0");
  });
});

describe("lagOf", () => {
  test("no lag when the client has the newest event of each topic", () => {
    const log = logOf([["a", "100-0"], ["b", "200-0"]]);
    assert.deepEqual(lagOf(client(["a", "b"], { a: "100-0", b: "200-0" }), log), { events: 0, ms: 0, atLeast: false });
  });

  test("events behind summed over topics; ms the largest distance", () => {
    const log = logOf([["a", "100-0"], ["a", "150-0"], ["a", "400-0"], ["b", "200-0"], ["b", "250-0"]]);
    assert.deepEqual(lagOf(client(["a", "b"], { a: "100-0", b: "200-0" }), log), { events: 3, ms: 300, atLeast: false });
    assert.equal(typeof lagOf(client(["a"], { a: "100-0" }), log).ms, "number");
  });

  test("before its first event a client is measured from the newest ID known when it started", () => {
    const log = logOf([["a", "100-0"], ["a", "130-0"]]);
    assert.deepEqual(lagOf(client(["a"], {}, { a: "100-0" }), log), { events: 1, ms: 30, atLeast: false });
    // With nothing known at its start, everything since is lag, with no distance in ms.
    assert.deepEqual(lagOf(client(["a"], {}, { a: null }), log), { events: 2, ms: 0, atLeast: false });
  });

  test("topics the page knows nothing of add nothing", () => {
    assert.deepEqual(lagOf(client(["x"], {}, { x: null }), new TopicLog()), { events: 0, ms: 0, atLeast: false });
  });
});
