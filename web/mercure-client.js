// A Mercure subscriber: a Subscriber whose stream is `/.well-known/mercure`,
// read with an EventSource of its own (HubStream speaks only the native API).
//
// Counting, the seq checks and the list of updates are the native client's.
// What differs: a Mercure ID names an update, not a position in a topic, so the
// page cannot tell an update's topic nor how far behind the client is; and the
// hub sends no stream-reset notice here (a publisher's update may have that type).

import { Subscriber } from "./client.js";
import { subscribeUrl } from "./mercure.js";

const REASON_CHARS = 300;
// Delays before the page itself reconnects after a failure EventSource does not retry.
const RETRY_DELAYS_MS = [1_000, 2_000, 5_000, 10_000];

export class MercureClient extends Subscriber {
  #source = null;
  #retryTimer = null;
  #failures = 0;

  /** exact, patterns: the matchers; token: a JWT sent in the query, "" for an anonymous subscriber. */
  constructor({ id, exact, patterns, token, types, onChange }) {
    super({ id, types, onChange });
    this.name = `Mercure ${id}`;
    this.mode = "mercure";
    this.exact = [...new Set(exact)];
    this.patterns = [...new Set(patterns)];
    this.token = token;
    this.tracksLag = false;
  }

  scope() {
    return [
      { label: "match", values: this.exact },
      { label: "URL pattern", values: this.patterns },
    ].filter((group) => group.values.length > 0);
  }

  url(cursor) {
    return subscribeUrl({ exact: this.exact, patterns: this.patterns, token: this.token, lastEventId: cursor });
  }

  locate() {
    return { topic: null, id: null, redelivered: false };
  }

  connect(cursor = "") {
    this.#close();
    const url = this.url(cursor);
    const source = new EventSource(url);
    this.#source = source;
    this.setState("connecting", cursor ? `resuming after ${cursor}` : "new events only");
    source.addEventListener("open", () => {
      if (source !== this.#source) return;
      this.#failures = 0;
      this.setState("open", "");
    });
    source.addEventListener("error", () => {
      if (source !== this.#source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.setState("closed", "the stream failed");
        this.#explain(url, source);
      } else {
        this.setState("reconnecting", "connection lost; the browser reconnects by itself");
      }
    });
    // A Set: a second listener for a type would hand each of its updates over twice.
    for (const type of new Set(["message", ...this.types])) this.#listen(source, type);
  }

  disconnect() {
    this.#close();
    this.setState("closed", "disconnected");
  }

  /** A new connection that resumes after the last update this client saw. */
  resume() {
    this.connect(this.lastEventId);
  }

  /** Starts over: counters and list cleared, new updates only. */
  fresh() {
    this.#close();
    this.clear();
    this.connect("");
  }

  /** Also receive updates of this type (EventSource hands named types only to their listeners). */
  listen(type) {
    if (!type || type === "message" || this.types.has(type)) return;
    this.types.add(type);
    if (this.#source) this.#listen(this.#source, type);
  }

  dispose() {
    this.#close();
  }

  #close() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#source?.close();
    this.#source = null;
  }

  #listen(source, type) {
    source.addEventListener(type, (event) => source === this.#source && this.receive(type, event.lastEventId, event.data));
  }

  /**
   * EventSource gives up for good on any answer but a 200 stream, and says
   * nothing of why: ask the hub once. A 4xx is final (a bad matcher or token);
   * anything else (a 5xx from the hub or a proxy, no answer) is retried here,
   * resuming from the last update, as EventSource would have done.
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
          if (source === this.#source) this.setState("closed", why);
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
    this.setState("reconnecting", `${why}; retrying in ${delay / 1000} s`);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      if (source === this.#source) this.resume();
    }, delay);
  }
}
