// One subscriber: its own EventSource, its counters and the events not yet shown.
// This is the hub's native API; mercure-client.js changes only what differs
// for a Mercure subscriber (its URL, and that its IDs name no topic).

import { canonicalTopics, compareIds, decodeCursor } from "./cursor.js";
import { describeData } from "./eventdata.js";
import { DeliveryCheck } from "./sequence.js";

export const SHOWN_EVENTS = 50;
export const RESET_EVENT_TYPE = "stream-reset";
const MAX_WARNINGS = 3;
const REASON_CHARS = 300;
// Delays before the page itself reconnects after a failure EventSource does not retry.
const RETRY_DELAYS_MS = [1_000, 2_000, 5_000, 10_000];

/**
 * The `stream-reset` notice's JSON (hub/sse.py, reset_notice) as
 * `{topic, reason, firstKept}`; what cannot be read is shown with defaults.
 */
export function parseResetNotice(data) {
  let notice = {};
  try {
    notice = JSON.parse(data) ?? {};
  } catch {
    // Shown with what is known.
  }
  return {
    topic: String(notice.topic ?? "?"),
    reason: String(notice.reason ?? "history truncated"),
    firstKept: String(notice.first_kept ?? ""),
  };
}

export class HubClient {
  #source = null;
  #retryTimer = null;
  #failures = 0;
  #onChange;
  #onEvent;
  #newestId;

  /**
   * onChange(): something to show changed. onEvent(topic, id): an event arrived.
   * newestId(topic): the newest event ID known on the page, the start of lag.
   */
  constructor({ id, topics, types, onChange, onEvent, newestId }) {
    this.id = id;
    this.name = `Client ${id}`;
    this.topics = canonicalTopics(topics);
    this.types = new Set(types);
    this.#onChange = onChange;
    this.#onEvent = onEvent;
    this.#newestId = newestId;
    /** The type of the hub's stream-reset notices; null where there are none. */
    this.mode = "native";
    this.resetType = RESET_EVENT_TYPE;
    /** Whether the summary can tell how far behind the client is (native IDs are positions). */
    this.tracksLag = true;
    this.state = "closed";
    this.note = "";
    this.#clear();
  }

  #clear() {
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

  url(cursor) {
    const params = new URLSearchParams();
    for (const topic of this.topics) params.append("topic", topic);
    if (cursor) params.set("last_event_id", cursor);
    return `events?${params}`;
  }

  connect(cursor = "") {
    this.#close();
    const url = this.url(cursor);
    const source = new EventSource(url);
    this.#source = source;
    this.#set("connecting", cursor ? `resuming after ${cursor}` : "new events only");
    source.addEventListener("open", () => {
      if (source !== this.#source) return;
      this.opened += 1;
      this.#failures = 0;
      this.#set("open", "");
    });
    source.addEventListener("error", () => {
      if (source !== this.#source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.#set("closed", "the stream failed");
        this.#explain(url, source);
      } else {
        this.#set("reconnecting", "connection lost; the browser reconnects by itself");
      }
    });
    // A Set: a second listener for a type would hand each of its events over twice.
    for (const type of new Set(["message", this.resetType, ...this.types])) if (type) this.#listen(source, type);
  }

  disconnect() {
    this.#close();
    this.#set("closed", "disconnected");
  }

  /** A new connection that resumes after the last event this client saw. */
  resume() {
    this.connect(this.lastEventId);
  }

  /** Starts over: counters and list cleared, new events only. */
  fresh() {
    this.#close();
    this.#clear();
    this.connect("");
  }

  /** Also receive events of this type (EventSource hands named types only to their listeners). */
  listen(type) {
    if (!type || type === "message" || type === this.resetType || this.types.has(type)) return;
    this.types.add(type);
    if (this.#source) this.#listen(this.#source, type);
  }

  dispose() {
    this.#close();
  }

  takePending() {
    const pending = this.pending;
    this.pending = [];
    return pending;
  }

  #close() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#source) this.#source.close();
    this.#source = null;
  }

  #set(state, note) {
    this.state = state;
    this.note = note;
    this.#onChange();
  }

  #listen(source, type) {
    source.addEventListener(type, (event) => {
      if (source !== this.#source) return;
      if (type === this.resetType) this.#reset(event);
      else this.#receive(type, event);
      this.#onChange();
    });
  }

  #show(record) {
    this.pending.push(record);
    if (this.pending.length > SHOWN_EVENTS) this.pending.shift();
  }

  #receive(type, event) {
    const where = this.locate(event.lastEventId);
    const data = describeData(event.data);
    const flag = this.check.observe({ topic: where.topic, redelivered: where.redelivered, seq: data.seq, run: data.run });
    this.count += 1;
    if (event.lastEventId) this.lastEventId = event.lastEventId;
    if (where.topic && where.id && !where.redelivered) this.#onEvent(where.topic, where.id);
    this.#show({ kind: "event", id: event.lastEventId, type, topic: where.topic, data, flag, at: new Date() });
  }

  #reset(event) {
    const warning = { ...parseResetNotice(event.data), at: new Date() };
    this.warnings.unshift(warning);
    this.warnings.length = Math.min(this.warnings.length, MAX_WARNINGS);
    if (event.lastEventId) this.lastEventId = event.lastEventId;
    this.#show({ kind: "reset", id: event.lastEventId, warning, at: warning.at });
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

  /**
   * EventSource gives up for good on any answer but a 200 stream, and says
   * nothing of why: ask the hub once. A 4xx is final (a bad topic or cursor);
   * anything else (a 5xx from the hub or a proxy, no answer) is retried here,
   * resuming from the cursor, as EventSource would have done.
   */
  async #explain(url, source) {
    const abort = new AbortController();
    let why = "the hub cannot be reached";
    try {
      const response = await fetch(url, { headers: { Accept: "text/event-stream" }, signal: abort.signal });
      if (!response.ok) {
        const reason = (await response.text()).trim().slice(0, REASON_CHARS);
        why = `HTTP ${response.status}${reason ? `: ${reason}` : ""}`;
        if (response.status < 500) {
          if (source === this.#source) this.#set("closed", why);
          return;
        }
      } else {
        why = "the stream failed";
      }
    } catch {
      // No answer: retried below.
    } finally {
      abort.abort();
    }
    if (source !== this.#source) return;
    const delay = RETRY_DELAYS_MS[Math.min(this.#failures, RETRY_DELAYS_MS.length - 1)];
    this.#failures += 1;
    this.#set("reconnecting", `${why}; retrying in ${delay / 1000} s`);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      if (source === this.#source) this.resume();
    }, delay);
  }
}
