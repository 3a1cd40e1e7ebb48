// Mercure's active subscriptions as the presence view keeps them (web/roster.js).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Roster, parseSubscription } from "../../web/roster.js";

function doc(id, active, extra = {}) {
  return { id, type: "Subscription", matchType: "Exact", match: id, subscriber: "urn:s", active, ...extra };
}

describe("parseSubscription", () => {
  test("reads a subscription event's JSON-LD", () => {
    const text = JSON.stringify({ "@context": "https://mercure.rocks/", ...doc("/s/a", true), payload: { n: 1 } });
    assert.deepEqual(parseSubscription(text).payload, { n: 1 });
  });

  test("anything else is null", () => {
    for (const text of ["", "not json", "null", "[]", '{"id": 1}', JSON.stringify({ ...doc("/s", true), type: "Other" }),
                        JSON.stringify({ ...doc("/s", true), active: "yes" })]) {
      assert.equal(parseSubscription(text), null, text);
    }
  });
});

describe("Roster", () => {
  test("starts from the API's list, sorted by ID", () => {
    const roster = new Roster();
    roster.load({ subscriptions: [doc("/s/b", true), doc("/s/a", true), null], lastEventID: "#1" });
    assert.deepEqual(roster.list.map((d) => d.id), ["/s/a", "/s/b"]);
    assert.deepEqual(roster.changes, []);
  });

  test("events add and remove, and are logged newest first", () => {
    const roster = new Roster();
    roster.load({ subscriptions: [doc("/s/a", true)] });
    assert.equal(roster.apply(doc("/s/b", true)), "joined");
    assert.equal(roster.apply(doc("/s/a", false)), "left");
    assert.deepEqual(roster.list.map((d) => d.id), ["/s/b"]);
    assert.deepEqual(roster.changes.map((c) => [c.kind, c.subscription.id]), [["left", "/s/a"], ["joined", "/s/b"]]);
  });

  test("replayed events the list already reflects change nothing", () => {
    const roster = new Roster();
    roster.load({ subscriptions: [doc("/s/a", true)] });
    assert.equal(roster.apply(doc("/s/a", true)), "");
    assert.equal(roster.apply(doc("/s/gone", false)), "");
    assert.equal(roster.changes.length, 0);
    assert.equal(roster.list.length, 1);
  });

  test("a repeated join keeps the newest document (its payload may differ)", () => {
    const roster = new Roster();
    roster.apply(doc("/s/a", true, { payload: 1 }));
    roster.apply(doc("/s/a", true, { payload: 2 }));
    assert.equal(roster.list[0].payload, 2);
  });

  test("keeps the latest ten changes", () => {
    const roster = new Roster();
    for (let i = 0; i < 15; i++) roster.apply(doc(`/s/${i}`, true));
    assert.equal(roster.changes.length, 10);
    assert.equal(roster.changes[0].subscription.id, "/s/14");
  });
});
