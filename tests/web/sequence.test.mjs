// Gap and duplicate detection for one client (web/sequence.js).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { DeliveryCheck } from "../../web/sequence.js";

function event(seq, { topic = "t", run = null, redelivered = false } = {}) {
  return { topic, redelivered, seq, run };
}

function counters(check) {
  const { gaps, missing, dupes, outOfOrder } = check;
  return { gaps, missing, dupes, outOfOrder };
}

function observeAll(check, seqs, options) {
  return seqs.map((seq) => check.observe(event(seq, options)));
}

describe("DeliveryCheck", () => {
  test("a sequence in order raises nothing", () => {
    const check = new DeliveryCheck();
    assert.deepEqual(observeAll(check, [1, 2, 3, 4, 5]), [null, null, null, null, null]);
    assert.deepEqual(counters(check), { gaps: 0, missing: 0, dupes: 0, outOfOrder: 0 });
  });

  test("the first event starts the sequence wherever it is", () => {
    const check = new DeliveryCheck();
    assert.deepEqual(observeAll(check, [41, 42]), [null, null]);
    assert.deepEqual(counters(check), { gaps: 0, missing: 0, dupes: 0, outOfOrder: 0 });
  });

  test("a jump ahead is a gap of the events skipped", () => {
    const check = new DeliveryCheck();
    assert.deepEqual(observeAll(check, [1, 2, 6, 7, 9]), [null, null, { kind: "gap", missing: 3 }, null, { kind: "gap", missing: 1 }]);
    assert.deepEqual(counters(check), { gaps: 2, missing: 4, dupes: 0, outOfOrder: 0 });
  });

  test("a seq seen before is a duplicate", () => {
    const check = new DeliveryCheck();
    assert.deepEqual(observeAll(check, [1, 2, 3, 2, 3]), [null, null, null, { kind: "dupe" }, { kind: "dupe" }]);
    assert.deepEqual(counters(check), { gaps: 0, missing: 0, dupes: 2, outOfOrder: 0 });
  });

  test("an event whose stream ID did not advance is a duplicate, whatever its data", () => {
    const check = new DeliveryCheck();
    check.observe(event(1));
    assert.deepEqual(check.observe(event(2, { redelivered: true })), { kind: "dupe" });
    assert.deepEqual(check.observe(event(null, { redelivered: true })), { kind: "dupe" });
    // The redelivered seq was not recorded: its first real delivery is in order.
    assert.equal(check.observe(event(2)), null);
    assert.deepEqual(counters(check), { gaps: 0, missing: 0, dupes: 2, outOfOrder: 0 });
  });

  test("a late arrival fills part of a gap and counts as out of order", () => {
    const check = new DeliveryCheck();
    observeAll(check, [1, 5]);
    assert.deepEqual(counters(check), { gaps: 1, missing: 3, dupes: 0, outOfOrder: 0 });
    assert.deepEqual(check.observe(event(3)), { kind: "order" });
    assert.deepEqual(counters(check), { gaps: 1, missing: 2, dupes: 0, outOfOrder: 1 });
    assert.deepEqual(check.observe(event(3)), { kind: "dupe" });
    assert.equal(check.observe(event(6)), null);
  });

  test("events without a seq are not checked", () => {
    const check = new DeliveryCheck();
    assert.deepEqual(observeAll(check, [null, null, 1, null, 2]), [null, null, null, null, null]);
    assert.deepEqual(counters(check), { gaps: 0, missing: 0, dupes: 0, outOfOrder: 0 });
  });

  test("topics have their own sequences", () => {
    const check = new DeliveryCheck();
    check.observe(event(1, { topic: "a" }));
    check.observe(event(2, { topic: "a" }));
    assert.equal(check.observe(event(1, { topic: "b" })), null);
    assert.equal(check.observe(event(3, { topic: "a" })), null);
    assert.deepEqual(check.observe(event(4, { topic: "b" })), { kind: "gap", missing: 2 });
  });

  test("runs (two floods on one topic) have their own sequences", () => {
    const check = new DeliveryCheck();
    observeAll(check, [1, 2, 3], { run: "x" });
    assert.deepEqual(observeAll(check, [1, 2], { run: "y" }), [null, null]);
    assert.equal(check.observe(event(4, { run: "x" })), null);
    assert.deepEqual(check.observe(event(2, { run: "y" })), { kind: "dupe" });
  });

  test("without a run, a seq of 0 or 1 after higher ones starts a new sequence", () => {
    const check = new DeliveryCheck();
    observeAll(check, [1, 2, 3]);
    assert.deepEqual(observeAll(check, [1, 2, 3]), [null, null, null]);
    assert.deepEqual(observeAll(check, [0, 1]), [null, null]);
    assert.deepEqual(counters(check), { gaps: 0, missing: 0, dupes: 0, outOfOrder: 0 });
    // With a run, the same 1 is a duplicate.
    observeAll(check, [1, 2, 3], { run: "r" });
    assert.deepEqual(check.observe(event(1, { run: "r" })), { kind: "dupe" });
  });

  test("a long sequence forgets its oldest seqs but still calls them duplicates", () => {
    const check = new DeliveryCheck();
    for (let seq = 1; seq <= 12_000; seq++) assert.equal(check.observe(event(seq, { run: "r" })), null);
    assert.deepEqual(check.observe(event(5, { run: "r" })), { kind: "dupe" });
    assert.deepEqual(check.observe(event(11_999, { run: "r" })), { kind: "dupe" });
    assert.equal(check.observe(event(12_001, { run: "r" })), null);
    assert.deepEqual(counters(check), { gaps: 0, missing: 0, dupes: 2, outOfOrder: 0 });
  });

  test("keeps at most 256 sequences, forgetting the oldest", () => {
    const check = new DeliveryCheck();
    check.observe(event(5, { run: "first" }));
    for (let run = 0; run < 256; run++) check.observe(event(1, { run: `r${run}` }));
    // "first" was forgotten: 5 starts it afresh instead of being a duplicate.
    assert.equal(check.observe(event(5, { run: "first" })), null);
    assert.equal(check.dupes, 0);
  });
});
