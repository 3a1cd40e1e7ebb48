// Stream IDs and resume cursors (web/cursor.js, mirroring hub/events.py and hub/cursor.py).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ID_PART_MAX, MAX_CURSOR_LENGTH, canonicalTopics, compareIds, decodeCursor, formatId, parseId } from "../../web/cursor.js";

describe("parseId", () => {
  test("reads <ms>-<seq> as a pair of BigInts", () => {
    assert.deepEqual(parseId("1700000000000-3"), [1700000000000n, 3n]);
    assert.deepEqual(parseId("0-0"), [0n, 0n]);
    assert.deepEqual(parseId("007-01"), [7n, 1n]);
  });

  test("keeps every digit of both parts up to 2^64 - 1", () => {
    assert.deepEqual(parseId("18446744073709551615-18446744073709551615"), [ID_PART_MAX, ID_PART_MAX]);
    assert.deepEqual(parseId("9007199254740993-0"), [9007199254740993n, 0n]);
  });

  test("refuses parts of 2^64 and more, as Redis and the hub do", () => {
    assert.equal(parseId("18446744073709551616-0"), null);
    assert.equal(parseId("0-18446744073709551616"), null);
    assert.equal(parseId("99999999999999999999-0"), null);
  });

  test("refuses anything else", () => {
    for (const text of ["", "1", "1-", "-1", "1-2-3", "a-1", "1-b", " 1-2", "1-2 ", "1-2\n", "+1-2", "1.5-2", "٣-1", "123456789012345678901-0", null, undefined]) {
      assert.equal(parseId(text), null, `${JSON.stringify(text)}`);
    }
  });
});

describe("formatId", () => {
  test("round-trips with parseId", () => {
    for (const text of ["0-0", "1700000000000-3", "18446744073709551615-18446744073709551615"]) {
      assert.equal(formatId(parseId(text)), text);
    }
  });
});

describe("compareIds", () => {
  test("orders by ms, then seq, as integers rather than strings", () => {
    assert.equal(compareIds(parseId("9-0"), parseId("10-0")), -1);
    assert.equal(compareIds(parseId("10-0"), parseId("9-5")), 1);
    assert.equal(compareIds(parseId("5-2"), parseId("5-10")), -1);
    assert.equal(compareIds(parseId("5-10"), parseId("5-10")), 0);
  });

  test("tells apart IDs a float could not (beyond 2^53)", () => {
    assert.equal(compareIds(parseId("9007199254740993-0"), parseId("9007199254740992-0")), 1);
    assert.equal(compareIds(parseId("1-9007199254740992"), parseId("1-9007199254740993")), -1);
  });

  test("sorts a list of IDs", () => {
    const ids = ["10-0", "9-1", "9-10", "100-0", "9-2"].map(parseId);
    assert.deepEqual(ids.sort(compareIds).map(formatId), ["9-1", "9-2", "9-10", "10-0", "100-0"]);
  });
});

describe("canonicalTopics", () => {
  test("sorts and drops repeats", () => {
    assert.deepEqual(canonicalTopics(["b", "a", "b", "A", "_", "1", ":"]), ["1", ":", "A", "_", "a", "b"]);
    assert.deepEqual(canonicalTopics([]), []);
  });
});

describe("decodeCursor", () => {
  test("on one topic a cursor is the stream ID", () => {
    assert.deepEqual(decodeCursor("1700000000000-3", 1), [[1700000000000n, 3n]]);
    assert.equal(decodeCursor("m3xk2a1c.0.0", 1), null);
    assert.equal(decodeCursor("", 1), null);
    assert.equal(decodeCursor(undefined, 1), null);
  });

  test("a composite: base ms in base 36, then per topic how far behind, and the seq when not 0", () => {
    const base = parseInt("m3xk2a1c", 36);
    assert.deepEqual(decodeCursor("m3xk2a1c.0.4f-2.0", 3), [
      [BigInt(base), 0n],
      [BigInt(base - parseInt("4f", 36)), 2n],
      [BigInt(base), 0n],
    ]);
    assert.deepEqual(decodeCursor("z.z-z.0", 2), [[0n, 35n], [35n, 0n]]);
  });

  test("needs exactly one position per topic", () => {
    assert.equal(decodeCursor("1.0", 2), null);
    assert.equal(decodeCursor("1.0.0.0", 2), null);
    assert.equal(decodeCursor("1-0", 2), null);
  });

  test("splits a position at its first dash only, and an empty seq is 0 (as hub/cursor.py)", () => {
    assert.equal(decodeCursor("a.0-1-2.0", 2), null);
    assert.deepEqual(decodeCursor("a.0-.0", 2), [[10n, 0n], [10n, 0n]]);
    assert.equal(decodeCursor("a.-1.0", 2), null);
  });

  test("refuses digits outside lower-case base 36, and numbers of more than 14 digits", () => {
    for (const cursor of ["A.0.0", "a.0.B", "a..0", ".0.0", "a. 0.0", "a.0.+1", "a.0.0-_", "0".repeat(15) + ".0.0"]) {
      assert.equal(decodeCursor(cursor, 2), null, cursor);
    }
    assert.deepEqual(decodeCursor("0".repeat(14) + ".0.0", 2), [[0n, 0n], [0n, 0n]]);
  });

  test("refuses positions before 0 or beyond 2^64 - 1", () => {
    assert.equal(decodeCursor("a.b.0", 2), null);
    const max = ID_PART_MAX.toString(36);
    assert.deepEqual(decodeCursor(`${max}.0.0-${max}`, 2), [[ID_PART_MAX, 0n], [ID_PART_MAX, ID_PART_MAX]]);
    const over = (ID_PART_MAX + 1n).toString(36);
    assert.equal(decodeCursor(`${over}.0.0`, 2), null);
    assert.deepEqual(decodeCursor(`${over}.1.1`, 2), [[ID_PART_MAX, 0n], [ID_PART_MAX, 0n]]);
    assert.equal(decodeCursor(`1.0.0-${over}`, 2), null);
  });

  test("refuses cursors longer than the hub accepts", () => {
    const topics = 1200;
    const cursor = ["1", ...Array(topics).fill("0-1")].join(".");
    assert.ok(cursor.length > MAX_CURSOR_LENGTH);
    assert.equal(decodeCursor(cursor, topics), null);
    const shorter = ["1", ...Array(1000).fill("0-1")].join(".");
    assert.ok(shorter.length <= MAX_CURSOR_LENGTH);
    assert.equal(decodeCursor(shorter, 1000).length, 1000);
  });
});
