// One panel's subscriber. Subscriber: its counters, delivery checks and the
// events not yet shown, whatever its stream. HubClient: the hub's native API
// through HubStream (sse-hub.js), the client applications use, so the page shows
// what an application gets. mercure-client.js is the other kind of Subscriber.

import { canonicalTopics, compareIds, decodeCursor } from "./cursor.js";
import { describeData } from "./eventdata.js";
import { DeliveryCheck } from "./sequence.js";
import { HubStream, RESET_EVENT_TYPE } from "./sse-hub.js";

export const SHOWN_EVENTS = 50;
export { RESET_EVENT_TYPE };
/** Where native panels keep their cursors: with the panel's number and topics, which a reload recreates. */
export const CURSOR_KEY_PREFIX = "sse-hub-page:";
const MAX_WARNINGS = 3;

/** A stream-reset notice as the panel shows it; what the notice does not say gets a default. */
export function resetWarning({ topic, reason, firstKept } = {}) {
  return { topic: String(topic || "?"), reason: String(reason || "history truncated"), firstKept: String(firstKept ?? "") };
}

/**
 * The tab's sessionStorage: it outlives a reload but not the tab, and each tab
 * has its own, so two tabs of the page never resume from each other's cursors.
 */
function tabStorage() {
  try {
    const storage = globalThis.sessionStorage;
    storage.setItem(CURSOR_KEY_PREFIX, "");
    storage.removeItem(CURSOR_KEY_PREFIX);
    return storage;
  } catch {
    // Forbidden storage: cursors last as long as the page, which still resumes exactly.
    const items = new Map();
    return { getItem: (key) => items.get(key) ?? null, setItem: (key, value) => items.set(key, String(value)), removeItem: (key) => items.delete(key) };
  }
}

export class Subscriber {
  #onChange;
  #onEvent;
  #newestId;

  /**
   * onChange(): something to show changed. onEvent(topic, id): an event of a topic arrived.
   * newestId(topic): the newest event ID known on the page, the start of lag.
   */
  constructor({ id, topics = [], types = [], onChange, onEvent = () => {}, newestId = () => null }) {
    this.id = id;
    this.topics = canonicalTopics(topics);
    this.types = new Set(types);
    this.types.delete("message");
    this.#onChange = onChange;
    this.#onEvent = onEvent;
    this.#newestId = newestId;
    this.state = "closed";
    this.note = "";
    this.clear();
  }

  /** Starts over: counters, checks and the list to show. */
  clear() {
    this.count = 0;
    this.lastEventId = "";
    this.check = new DeliveryCheck();
    this.positions = new Map();
    this.baseline = new Map(this.topics.map((topic) => [topic, this.#newestId(topic)]));
    this.pending = [];
    this.cleared = true;
    this.warnings = [];
    this.opened = 0;
  }

  /** What the client subscribes to, as `[{label, values}]` for its panel. */
  scope() {
    return [{ label: this.topics.length > 1 ? "topics" : "topic", values: this.topics }];
  }

  takePending() {
    const pending = this.pending;
    this.pending = [];
    return pending;
  }

  setState(state, note) {
    if (state === "open") this.opened += 1;
    this.state = state;
    this.note = note;
    this.#onChange();
  }

  receive(type, id, text) {
    const where = this.locate(id);
    const data = describeData(text);
    const flag = this.check.observe({ topic: where.topic, redelivered: where.redelivered, seq: data.seq, run: data.run });
    this.count += 1;
    if (id) this.lastEventId = id;
    if (where.topic && where.id && !where.redelivered) this.#onEvent(where.topic, where.id);
    this.#show({ kind: "event", id, type, topic: where.topic, data, flag, at: new Date() });
    this.#onChange();
  }

  /** Events after the cursor are gone: `notice` is `{topic, reason, firstKept}`. */
  warn(notice) {
    const warning = { ...resetWarning(notice), at: new Date() };
    this.warnings.unshift(warning);
    this.warnings.length = Math.min(this.warnings.length, MAX_WARNINGS);
    this.#show({ kind: "reset", id: "", warning, at: warning.at });
    this.#onChange();
  }

  #show(record) {
    this.pending.push(record);
    if (this.pending.length > SHOWN_EVENTS) this.pending.shift();
  }

  /**
   * Which topic an event belongs to, from how its cursor moved, and whether
   * it is one this client had already seen (its stream ID is not newer):
   * `{topic, id, redelivered}`, topic and id null when the cursor does not tell.
   */
  locate(cursor) {
    const positions = decodeCursor(cursor, this.topics.length);
    if (!positions) return { topic: this.topics.length === 1 ? this.topics[0] : null, id: null, redelivered: false };
    const advanced = [];
    positions.forEach((position, i) => {
      const known = this.positions.get(this.topics[i]);
      if (!known || compareIds(position, known) > 0) {
        advanced.push(i);
        this.positions.set(this.topics[i], position);
      }
    });
    if (advanced.length === 0) return { topic: this.topics.length === 1 ? this.topics[0] : null, id: null, redelivered: true };
    // Several positions move only on a client's first event: the newest is this event.
    const index = advanced.reduce((best, i) => (compareIds(positions[i], positions[best]) > 0 ? i : best));
    return { topic: this.topics[index], id: positions[index], redelivered: false };
  }
}

export class HubClient extends Subscriber {
  #url;
  #storage;
  #key;
  #stream = null;

  /**
   * url: the hub's /events, relative to the page. storage: where the cursor
   * outlives a reload (the tab's sessionStorage unless given).
   */
  constructor({ url = "events", storage = tabStorage(), ...options }) {
    super(options);
    this.name = `Client ${this.id}`;
    this.mode = "native";
    /** The summary can tell how far behind the client is: native IDs are positions. */
    this.tracksLag = true;
    this.types.delete(RESET_EVENT_TYPE); // HubStream reads those notices as gaps
    this.#url = url;
    this.#storage = storage;
    this.#key = `${CURSOR_KEY_PREFIX}${this.id}:${this.topics.join(" ")}`;
    /** Where the panel's first stream started: after a cursor from before the reload, or at new events. */
    this.start = "";
  }

  /** The first connection: after the cursor a previous page left under this panel's key, if any. */
  connect() {
    const stream = this.#open();
    if (!stream.resumed) {
      this.start = "new events only";
      return;
    }
    this.start = `resumed after ${stream.cursor} (from before the reload)`;
    this.lastEventId = stream.cursor;
    decodeCursor(stream.cursor, this.topics.length).forEach((position, i) => this.positions.set(this.topics[i], position));
  }

  disconnect() {
    this.#stop();
    this.setState("closed", "disconnected");
  }

  /** A new connection that resumes after the last event this client handed over. */
  resume() {
    this.#open();
  }

  /** Starts over: cursor forgotten, counters and list cleared, new events only. */
  fresh() {
    this.#stop();
    this.#forget();
    this.clear();
    this.start = "new events only";
    this.#open();
  }

  /** Also receive events of this type: a stream's types are fixed, so a new stream resumes after the cursor. */
  listen(type) {
    if (!type || type === "message" || type === RESET_EVENT_TYPE || this.types.has(type)) return;
    this.types.add(type);
    if (this.#stream && this.#stream.state !== "closed") this.#open();
  }

  /** The panel is gone: so is its cursor. */
  dispose() {
    this.#stop();
    this.#forget();
  }

  #open() {
    this.#stop();
    const stream = new HubStream(this.#url, { topics: this.topics, types: [...this.types], storage: this.#storage, key: this.#key });
    this.#stream = stream;
    const on = (type, handle) => stream.addEventListener(type, ({ detail }) => stream === this.#stream && handle(detail));
    on("state", ({ state, reason }) => this.setState(state, reason));
    on("event", ({ id, type, data }) => this.receive(type, id, data));
    on("gap", (notice) => this.warn(notice));
    return stream;
  }

  #stop() {
    const stream = this.#stream;
    this.#stream = null;
    stream?.close();
  }

  #forget() {
    try {
      this.#storage.removeItem(this.#key);
    } catch {
      // Forbidden storage held nothing.
    }
  }
}
