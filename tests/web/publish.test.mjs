// The publish form's rules: topic and event type grammars, and a flood's numbered data (web/publish.js).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { EVENT_TYPE, RESERVED_EVENT_TYPES, RESERVED_EVENT_TYPE_PREFIX, TOPIC, eventTypeProblem, floodData } from "../../web/publish.js";

describe("TOPIC", () => {
  test("1-1024 characters, IRIs among them", () => {
    for (const topic of ["a", "news", "A-Z_a.z/0:9", "x".repeat(1024), "..", "/", "::", "café", "a,b", "{a}", "a#b",
                         "https://example.com/books/1?lang=fr", "😀".repeat(1024)]) assert.ok(TOPIC.test(topic), topic);
  });

  test("no spaces, control characters or lone surrogates", () => {
    for (const topic of ["", "x".repeat(1025), "a b", "a\n", "\na", "a\u0085", "\u00a0", "a\tb", "\udc80"]) {
      assert.ok(!TOPIC.test(topic), JSON.stringify(topic));
    }
  });
});

describe("eventTypeProblem", () => {
  test("the default type and the grammar's types are fine", () => {
    for (const type of ["", "message", "price.update", "a:b/c_d-e", "x".repeat(64), "hub", "stream", "my-hub-thing"]) {
      assert.equal(eventTypeProblem(type), "", type);
      if (type) assert.ok(EVENT_TYPE.test(type));
    }
  });

  test("types outside the grammar are refused", () => {
    for (const type of ["x".repeat(65), "a b", "a\nb", "é", "a;b"]) {
      assert.match(eventTypeProblem(type), /1-64 characters/, JSON.stringify(type));
    }
  });

  test("the hub's own types are reserved: stream-reset and any hub-*", () => {
    assert.deepEqual(RESERVED_EVENT_TYPES, ["stream-reset"]);
    assert.equal(RESERVED_EVENT_TYPE_PREFIX, "hub-");
    for (const type of ["stream-reset", "hub-", "hub-ping", "hub-x y"]) {
      assert.match(eventTypeProblem(type), /reserved/, type);
    }
  });
});

describe("floodData", () => {
  test("numbers each event with seq and run", () => {
    assert.deepEqual(JSON.parse(floodData("", 3, "r1")), { seq: 3, run: "r1" });
  });

  test("keeps the fields of a JSON object, but seq and run are the flood's", () => {
    assert.deepEqual(JSON.parse(floodData('{"a": 1, "seq": 99, "run": "no"}', 2, "r")), { seq: 2, run: "r", a: 1 });
    assert.deepEqual(Object.keys(JSON.parse(floodData('{"a": 1}', 2, "r"))), ["seq", "run", "a"]);
  });

  test("wraps other JSON as value and other text as text", () => {
    assert.deepEqual(JSON.parse(floodData("[1, 2]", 1, "r")), { seq: 1, run: "r", value: [1, 2] });
    assert.deepEqual(JSON.parse(floodData("7", 1, "r")), { seq: 1, run: "r", value: 7 });
    assert.deepEqual(JSON.parse(floodData("null", 1, "r")), { seq: 1, run: "r", value: null });
    assert.deepEqual(JSON.parse(floodData("hello {", 1, "r")), { seq: 1, run: "r", text: "hello {" });
    assert.deepEqual(JSON.parse(floodData("   ", 1, "r")), { seq: 1, run: "r" });
  });
});
