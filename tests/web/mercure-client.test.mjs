// The page's Mercure side on the wire: a Mercure subscriber (web/mercure-client.js),
// with EventSource as a stand-in, and publishing an update (web/publish.js) with fetch as one.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { MercureClient } from "../../web/mercure-client.js";
import { PublishError, publishMercure } from "../../web/publish.js";
import { FakeEventSource } from "./fake-event-source.mjs";

const saved = {};
beforeEach(() => {
  saved.EventSource = globalThis.EventSource;
  saved.fetch = globalThis.fetch;
  globalThis.EventSource = FakeEventSource;
  FakeEventSource.made = [];
});
afterEach(() => {
  globalThis.EventSource = saved.EventSource;
  globalThis.fetch = saved.fetch;
});

function mercureClient(options = {}) {
  const client = new MercureClient({ id: 4, exact: ["https://e.com/1"], patterns: ["/books/:id"], token: "", types: [], onChange: () => {}, ...options });
  client.connect();
  return { client, source: FakeEventSource.made.at(-1) };
}

describe("MercureClient", () => {
  test("subscribes at /.well-known/mercure with its matchers and token", () => {
    const { client, source } = mercureClient({ token: "a.b.c" });
    const url = new URL(source.url, "http://hub.test/");
    assert.equal(url.pathname, "/.well-known/mercure");
    assert.deepEqual(url.searchParams.getAll("match"), ["https://e.com/1"]);
    assert.deepEqual(url.searchParams.getAll("matchURLPattern"), ["/books/:id"]);
    assert.equal(url.searchParams.get("authorization"), "a.b.c");
    assert.equal(client.name, "Mercure 4");
    assert.deepEqual(client.scope(), [{ label: "match", values: ["https://e.com/1"] }, { label: "URL pattern", values: ["/books/:id"] }]);
  });

  test("counts updates, keeps their IDs and types, and checks seq as a native client does", () => {
    const { client, source } = mercureClient();
    source.emit("message", '{"seq": 1, "run": "r"}', "#1");
    source.emit("message", '{"seq": 3, "run": "r"}', "#2");
    assert.equal(client.count, 2);
    assert.equal(client.lastEventId, "#2");
    assert.equal(client.check.gaps, 1);
    const shown = client.takePending();
    assert.deepEqual(shown.map((r) => [r.id, r.type, r.topic]), [["#1", "message", null], ["#2", "message", null]]);
  });

  test("resumes with lastEventID; listens for types, and stream-reset is just a type here", () => {
    const { client, source } = mercureClient();
    assert.deepEqual(source.types().filter((t) => !["open", "error"].includes(t)), ["message"]);
    source.emit("message", "x", "urn:mine");
    client.listen("stream-reset");
    source.emit("stream-reset", "not a notice", "urn:next");
    assert.equal(client.count, 2);
    assert.equal(client.warnings.length, 0);
    client.resume();
    const url = new URL(FakeEventSource.made.at(-1).url, "http://hub.test/");
    assert.equal(url.searchParams.get("lastEventID"), "urn:next");
  });

  test("a refused subscription is final and says why; a failing hub is retried after the last update", async () => {
    const answers = [new Response("bad matcher\n", { status: 400 }), new Response("bad gateway", { status: 502 })];
    globalThis.fetch = async () => answers.shift();
    const giveUp = async (source) => {
      source.readyState = FakeEventSource.CLOSED;
      source.emit("error");
      await new Promise((resolve) => setTimeout(resolve, 5));
    };
    const refused = mercureClient();
    await giveUp(refused.source);
    assert.deepEqual([refused.client.state, refused.client.note], ["closed", "HTTP 400: bad matcher"]);
    const failing = mercureClient();
    failing.source.emit("message", "x", "urn:1");
    await giveUp(failing.source);
    assert.deepEqual([failing.client.state, failing.client.note], ["reconnecting", "HTTP 502: bad gateway; retrying in 1 s"]);
    failing.client.dispose(); // no retry left behind
  });

  test("has no lag to tell", () => {
    assert.equal(mercureClient().client.tracksLag, false);
  });
});

describe("publishMercure", () => {
  test("POSTs the update form-encoded with the token as a bearer; resolves to the ID", async () => {
    const calls = [];
    globalThis.fetch = async (url, init) => {
      calls.push({ url, init });
      return new Response("#5:1-2\n", { status: 200, headers: { "Content-Type": "text/plain" } });
    };
    const id = await publishMercure({ topics: ["https://e.com/1"], data: "hi", type: "", id: "", private: true, token: "tok" });
    assert.equal(id, "#5:1-2");
    const [{ url, init }] = calls;
    assert.equal(url, ".well-known/mercure");
    assert.equal(init.method, "POST");
    assert.equal(init.headers["Content-Type"], "application/x-www-form-urlencoded");
    assert.equal(init.headers.Authorization, "Bearer tok");
    assert.equal(init.body, "topic=https%3A%2F%2Fe.com%2F1&data=hi&private=on");
  });

  test("a refusal says why, with a hint", async () => {
    globalThis.fetch = async () => new Response("the token does not allow publishing to x\n", { status: 403 });
    await assert.rejects(
      publishMercure({ topics: ["x"], data: "", token: "t" }),
      (error) => error instanceof PublishError && /HTTP 403: the token does not allow publishing to x \(this token may not publish/.test(error.message),
    );
  });
});
