// The applications' client (web/sse-hub.js): exactly once through its stored cursor,
// and what it does when EventSource gives up or the hub says Redis is away.
// EventSource, fetch, timers and storage are stand-ins the tests drive.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { HubStream } from "../../web/sse-hub.js";
import { MemoryStorage, composite } from "./doubles.mjs";
import { FakeEventSource } from "./fake-event-source.mjs";

const HUB = "https://hub.test/events";

let saved;
let timers; // {fn, ms, cleared}
let answers; // what fetch answers next, in order: Response or Error
let asked; // URLs fetch was called with

beforeEach(() => {
  saved = { EventSource: globalThis.EventSource, fetch: globalThis.fetch, setTimeout, clearTimeout, random: Math.random };
  globalThis.EventSource = FakeEventSource;
  FakeEventSource.made = [];
  timers = [];
  answers = [];
  asked = [];
  globalThis.setTimeout = (fn, ms) => timers.push({ fn, ms, cleared: false });
  globalThis.clearTimeout = (id) => {
    if (id) timers[id - 1].cleared = true;
  };
  globalThis.fetch = async (url, { signal }) => {
    asked.push(url);
    const answer = answers.shift() ?? new Error("no answer set up");
    if (answer instanceof Error) throw answer;
    signal.addEventListener("abort", () => answer.body?.cancel().catch(() => {}));
    return answer;
  };
  Math.random = () => 0.5;
});

afterEach(() => {
  Object.assign(globalThis, { EventSource: saved.EventSource, fetch: saved.fetch, setTimeout: saved.setTimeout, clearTimeout: saved.clearTimeout });
  Math.random = saved.random;
});

/** Lets the stream's awaited fetches and token calls run. */
const settle = () => new Promise((resolve) => saved.setTimeout(resolve, 5));

async function open(options = {}) {
  const stream = new HubStream(HUB, { topics: ["t"], storage: new MemoryStorage(), ...options });
  const seen = { events: [], states: [], gaps: [] };
  stream.addEventListener("event", (e) => seen.events.push(e.detail));
  stream.addEventListener("state", (e) => seen.states.push(e.detail));
  stream.addEventListener("gap", (e) => seen.gaps.push(e.detail));
  await null; // it connects once the caller's task has put its listeners on
  return { stream, seen, source: () => FakeEventSource.made.at(-1) };
}

/** The hub's answers, as fetch gives them. */
const unavailable = () => new Response(": redis unavailable\n\nretry: 3000\n\n", { headers: { "Hub-Unavailable": "redis" } });
const live = () => new Response("retry: 3000\n\n");
const refused = (status, reason) => new Response(reason, { status });

/** EventSource gives up, as after any answer but a 200 stream. */
function giveUp(source) {
  source.readyState = FakeEventSource.CLOSED;
  source.emit("error");
}

/** A stream ends and EventSource retries by itself. */
function streamEnds(source) {
  source.readyState = FakeEventSource.CONNECTING;
  source.emit("error");
}

const pending = () => timers.filter((t) => !t.cleared && !t.fired);
function fire() {
  const [timer] = pending();
  assert.ok(timer, "a timer is pending");
  timer.fired = true;
  timer.fn();
  return timer.ms;
}

describe("starting", () => {
  test("connects at once to its topics, sorted, with no cursor when none is stored", async () => {
    const { stream, source } = await open({ topics: ["b", "a/b", "b"] });
    assert.equal(FakeEventSource.made.length, 1);
    assert.equal(source().url, `${HUB}?topic=a%2Fb&topic=b`);
    assert.equal(stream.state, "connecting");
    assert.equal(stream.resumed, false);
    assert.equal(stream.cursor, "");
  });

  test("listeners put on right after it is made hear the first state; close() at once connects nothing", async () => {
    const { seen } = await open();
    assert.deepEqual(seen.states, [{ state: "connecting", reason: "new events only" }]);
    const stream = new HubStream(HUB, { topics: ["t"], storage: null });
    stream.close();
    await settle();
    assert.equal(FakeEventSource.made.length, 1);
    assert.equal(stream.state, "closed");
  });

  test("resumes from the cursor stored under the key its sorted topics make", async () => {
    const storage = new MemoryStorage();
    storage.setItem("sse-hub:a b", composite([[9, 0], [12, 3]]));
    const { stream, source } = await open({ topics: ["b", "a"], storage });
    assert.equal(stream.resumed, true);
    assert.equal(stream.cursor, composite([[9, 0], [12, 3]]));
    assert.equal(new URL(source().url).searchParams.get("last_event_id"), stream.cursor);
  });

  test("a stored value that is no cursor of these topics is not sent", async () => {
    const storage = new MemoryStorage();
    storage.setItem("sse-hub:a b", "12-0");
    const { stream, source } = await open({ topics: ["a", "b"], storage });
    assert.equal(stream.resumed, false);
    assert.equal(source().url, `${HUB}?topic=a&topic=b`);
  });

  test("storage null: the cursor is kept in memory only; no topic is an error", async () => {
    const { stream, source } = await open({ storage: null, key: "k" });
    source().emit("message", "x", "1-0");
    assert.equal(stream.cursor, "1-0");
    assert.throws(() => new HubStream(HUB, { topics: [] }), TypeError);
  });
});

describe("forgetting", () => {
  test("forget() closes the stream and drops its cursor: the next stream starts with new events", async () => {
    const storage = new MemoryStorage();
    const { stream, source } = await open({ storage });
    source().emit("open");
    source().emit("message", "x", "7-0");
    assert.equal(storage.getItem("sse-hub:t"), "7-0");
    stream.forget();
    assert.equal(stream.state, "closed");
    assert.equal(storage.getItem("sse-hub:t"), null);
    const next = new HubStream(HUB, { topics: ["t"], storage });
    assert.equal(next.resumed, false);
    next.close();
  });
});

describe("events", () => {
  test("each event is handed over, then its cursor stored, in the same task", async () => {
    const storage = new MemoryStorage();
    const { stream, source } = await open({ storage, key: "news" });
    const storedDuring = [];
    stream.addEventListener("event", () => storedDuring.push(storage.getItem("news")));
    source().emit("message", "one", "9-0");
    source().emit("message", "two", "10-0");
    assert.deepEqual(storedDuring, [null, "9-0"]);
    assert.equal(storage.getItem("news"), "10-0");
    assert.equal(stream.cursor, "10-0");
  });

  test("an ID not after the cursor is ignored: IDs compare as integers, not as text", async () => {
    const storage = new MemoryStorage();
    storage.setItem("k", "10-0");
    const { seen, source } = await open({ storage, key: "k" });
    source().emit("message", "old", "9-5");
    source().emit("message", "same", "10-0");
    source().emit("message", "new", "10-1");
    source().emit("message", "again", "10-1");
    source().emit("message", "newer", "11-0");
    assert.deepEqual(seen.events.map((e) => e.data), ["new", "newer"]);
    assert.equal(storage.getItem("k"), "11-0");
  });

  test("a composite cursor is new when it moves any topic on", async () => {
    const { seen, source } = await open({ topics: ["a", "b"] });
    source().emit("message", "x", composite([[10, 0], [20, 0]]));
    source().emit("message", "y", composite([[30, 0], [20, 0]]));
    source().emit("message", "y again", composite([[30, 0], [20, 0]]));
    source().emit("message", "z", composite([[30, 0], [20, 1]]));
    assert.deepEqual(seen.events.map((e) => e.data), ["x", "y", "z"]);
  });

  test("named types are delivered besides message, each with its type", async () => {
    const { seen, source } = await open({ types: ["note", "note"] });
    assert.equal(source().listenerCount("note"), 1);
    assert.equal(source().listenerCount("message"), 1);
    source().emit("note", "n", "1-0");
    source().emit("message", "m", "2-0");
    assert.deepEqual(seen.events, [{ id: "1-0", type: "note", data: "n" }, { id: "2-0", type: "message", data: "m" }]);
  });

  test("stream-reset is a gap, not an event; the cursor waits for the next event", async () => {
    const { stream, seen, source } = await open();
    source().emit("message", "x", "5-0");
    source().emit("stream-reset", '{"topic":"t","reason":"history-truncated","first_kept":"50-0"}', "5-0");
    source().emit("stream-reset", "not json", "5-0");
    assert.deepEqual(seen.gaps, [{ topic: "t", reason: "history-truncated", firstKept: "50-0" }, { topic: "", reason: "", firstKept: "" }]);
    assert.equal(stream.cursor, "5-0");
    source().emit("message", "y", "50-0");
    assert.deepEqual(seen.events.map((e) => e.id), ["5-0", "50-0"]);
  });
});

describe("when EventSource gives up", () => {
  test("a hub that does not answer is retried from the cursor: 1 s doubling to 30 s", async () => {
    const { stream, seen, source } = await open();
    source().emit("open");
    source().emit("message", "x", "5-0");
    const delays = [];
    for (let i = 0; i < 7; i++) {
      answers.push(i % 2 ? new Error("offline") : refused(502, "bad gateway"));
      giveUp(source());
      await settle();
      assert.equal(stream.state, "reconnecting");
      delays.push(fire());
      assert.equal(new URL(source().url).searchParams.get("last_event_id"), "5-0");
    }
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    assert.match(seen.states.at(-2).reason, /^HTTP 502: bad gateway; retrying in 30\.0 s$/);
    assert.equal(FakeEventSource.made.length, 8);
    assert.ok(FakeEventSource.made.slice(0, -1).every((s) => s.readyState === FakeEventSource.CLOSED));
  });

  test("the delays are jittered by a quarter either way, and start over once events flow", async () => {
    const { source } = await open();
    for (const random of [0, 0.999999]) {
      Math.random = () => random;
      answers.push(refused(503, ""));
      giveUp(source());
      await settle();
      fire();
    }
    assert.deepEqual(timers.map((t) => t.ms), [750, 2500]);
    source().emit("message", "x", "1-0");
    Math.random = () => 0.5;
    answers.push(refused(503, ""));
    giveUp(source());
    await settle();
    assert.equal(fire(), 1000);
  });

  test("a refusal is final: closed with the hub's reason", async () => {
    const { stream, seen, source } = await open();
    answers.push(refused(400, "bad cursor: expected a stream ID\n"));
    giveUp(source());
    await settle();
    assert.equal(stream.state, "closed");
    assert.equal(seen.states.at(-1).reason, "HTTP 400: bad cursor: expected a stream ID");
    assert.equal(pending().length, 0);
    assert.equal(FakeEventSource.made.length, 1);
  });
});

describe("tokens", () => {
  test("sent as access_token; after a 401 a new one is asked for and the stream resumes at once", async () => {
    const tokens = ["t1", "t2", "t3"];
    let release;
    const first = new Promise((resolve) => (release = resolve));
    const { stream, source } = await open({ token: async () => (await first, tokens.shift()) });
    await settle();
    assert.equal(FakeEventSource.made.length, 0, "not before the token is there");
    release();
    await settle();
    assert.equal(new URL(source().url).searchParams.get("access_token"), "t1");
    source().emit("open");
    source().emit("message", "x", "7-0");
    answers.push(refused(401, "the token has expired"));
    giveUp(source());
    await settle();
    assert.equal(pending().length, 0, "a token that served a stream: no wait");
    const params = new URL(source().url).searchParams;
    assert.deepEqual([params.get("access_token"), params.get("last_event_id")], ["t2", "7-0"]);
    assert.equal(asked.length, 1);
    assert.equal(new URL(asked[0]).searchParams.get("access_token"), "t1");

    // A new token refused before it served anything: wait, then ask again.
    answers.push(refused(403, "the token does not allow subscribing to t"));
    giveUp(source());
    await settle();
    assert.equal(stream.state, "reconnecting");
    assert.equal(fire(), 1000);
    await settle();
    assert.equal(new URL(source().url).searchParams.get("access_token"), "t3");
    assert.equal(stream.state, "connecting");
  });

  test("a fixed token that is refused closes the stream with the reason", async () => {
    const { stream, seen, source } = await open({ token: "only" });
    assert.equal(new URL(source().url).searchParams.get("access_token"), "only");
    source().emit("open");
    answers.push(refused(401, "the token has expired"));
    streamEnds(source());
    await settle();
    assert.equal(stream.state, "closed");
    assert.equal(seen.states.at(-1).reason, "HTTP 401: the token has expired");
  });

  test("a token function that fails is asked again after a while", async () => {
    let calls = 0;
    const { stream } = await open({
      token: () => {
        calls += 1;
        if (calls === 1) throw new Error("offline");
        return "t";
      },
    });
    await settle();
    assert.equal(stream.state, "reconnecting");
    fire();
    await settle();
    assert.equal(new URL(FakeEventSource.made.at(-1).url).searchParams.get("access_token"), "t");
  });
});

describe("a hub whose Redis is away", () => {
  test("an empty stream that ended, with Hub-Unavailable: unavailable, asked again after a backoff", async () => {
    const { stream, seen, source } = await open();
    source().emit("open");
    source().emit("message", "x", "3-0");
    streamEnds(source());
    assert.equal(asked.length, 0, "a stream that sent events is not asked about");
    assert.equal(stream.state, "reconnecting");

    source().emit("open");
    answers.push(unavailable());
    streamEnds(source());
    await settle();
    assert.equal(stream.state, "unavailable");
    assert.equal(source().readyState, FakeEventSource.CLOSED, "EventSource no longer retries by itself");

    // Asked before a stream is opened again: one request per try while Redis is away.
    answers.push(unavailable());
    assert.equal(fire(), 1000);
    await settle();
    assert.equal(FakeEventSource.made.length, 1);
    assert.equal(stream.state, "unavailable");
    answers.push(live());
    assert.equal(fire(), 2000);
    await settle();
    assert.equal(FakeEventSource.made.length, 2);
    assert.equal(new URL(source().url).searchParams.get("last_event_id"), "3-0");
    assert.deepEqual(
      seen.states.map((s) => s.state),
      ["connecting", "open", "reconnecting", "open", "reconnecting", "unavailable", "connecting", "unavailable", "connecting"],
    );

    // Events flow again: the next wait is the first one again.
    source().emit("open");
    source().emit("message", "y", "4-0");
    source().emit("open");
    answers.push(unavailable());
    streamEnds(source());
    await settle();
    assert.equal(fire(), 1000);
  });

  test("an empty stream that ended on a healthy hub is left to EventSource", async () => {
    const { stream, source } = await open();
    source().emit("open");
    answers.push(live());
    streamEnds(source());
    await settle();
    assert.equal(asked.length, 1);
    assert.equal(stream.state, "reconnecting");
    assert.equal(source().readyState, FakeEventSource.CONNECTING);
    assert.equal(pending().length, 0);
  });
});

test("close() stops everything, and late answers change nothing", async () => {
  const { stream, seen, source } = await open();
  answers.push(unavailable());
  giveUp(source());
  stream.close();
  await settle();
  assert.equal(stream.state, "closed");
  assert.equal(seen.states.at(-1).reason, "closed by the application");
  assert.equal(source().readyState, FakeEventSource.CLOSED);
  assert.equal(pending().length, 0);
  source().emit("message", "late", "1-0");
  assert.deepEqual(seen.events, []);
});
