// The hub's /events, each event handed over exactly once across reconnects, reloads
// and tabs: the cursor is stored right after each hand-over. Where EventSource gives
// up (any answer but a 200 stream) or cannot tell (a 200: Redis away), fetch asks why.

import { canonicalTopics, compareIds, decodeCursor } from "./cursor.js";

const AWAY = "unavailable";
const refusal = (status) => status >= 400 && status < 500;

/** The event type of the hub's notice that history after a cursor was trimmed (hub/sse.py). */
export const RESET_EVENT_TYPE = "stream-reset";

/** The stream-reset notice's JSON as {topic, reason, firstKept}; "" for what it does not say. */
export function parseResetNotice(data) {
  let notice;
  try {
    notice = JSON.parse(data);
  } catch {}
  const { topic = "", reason = "", first_kept: firstKept = "" } = notice instanceof Object ? notice : {};
  return { topic: String(topic ?? ""), reason: String(reason ?? ""), firstKept: String(firstKept ?? "") };
}

export class HubStream extends EventTarget {
  #url; #topics; #types; #storage; #key; #tokens; #token; #credentials; #source; #timer;
  #at = null; // the cursor, decoded
  #failures = 0;
  #run = 0;
  state = "connecting"; // it does once the caller's listeners are on
  cursor = "";
  resumed = false;

  constructor(url, { topics, types = [], storage, key, token = null, withCredentials = false } = {}) {
    super();
    if (!topics?.length) throw new TypeError("no topics");
    this.#url = new URL(url, globalThis.location?.href);
    this.#topics = canonicalTopics(topics);
    this.#types = new Set(["message", ...types]);
    this.#key = key ?? `sse-hub:${this.#topics.join(" ")}`; // topics hold no spaces
    this.#tokens = token;
    this.#token = typeof token === "string" ? token : null;
    this.#credentials = withCredentials;
    try {
      this.#storage = storage === undefined ? globalThis.localStorage : storage;
      const stored = this.#storage?.getItem(this.#key);
      // Not a cursor of these topics: the hub would refuse it (400).
      this.#at = decodeCursor(stored, this.#topics.length);
      if (this.#at) [this.cursor, this.resumed] = [stored, true];
    } catch {} // forbidden storage: a fresh start
    queueMicrotask(() => this.#run === 0 && this.#connect(typeof token === "function")); // unless closed
  }

  close() {
    this.#end("closed by the application");
  }

  /** Closes the stream and drops its stored cursor: the next one starts with new events. */
  forget() {
    this.close();
    try {
      this.#storage?.removeItem(this.#key);
    } catch {}
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #set(state, reason) {
    this.state = state;
    this.#emit("state", { state, reason });
  }

  #halt() {
    this.#run += 1;
    clearTimeout(this.#timer);
    this.#source?.close();
    this.#source = null;
  }

  #end(reason) {
    this.#halt();
    this.#set("closed", reason);
  }

  #streamUrl() {
    const url = new URL(this.#url);
    for (const topic of this.#topics) url.searchParams.append("topic", topic);
    if (this.cursor) url.searchParams.set("last_event_id", this.cursor);
    if (this.#token) url.searchParams.set("access_token", this.#token);
    return url.href;
  }

  async #connect(newToken = false) {
    this.#halt();
    // While the hub's Redis is away, it is asked before a stream is opened again.
    const [run, probeFirst] = [this.#run, this.state === AWAY];
    this.#set("connecting", this.cursor ? `resuming after ${this.cursor}` : "new events only");
    try {
      if (newToken) this.#token = await this.#tokens();
    } catch (error) {
      if (run === this.#run) this.#retry("reconnecting", `no token: ${error}`, true);
      return;
    }
    const answer = probeFirst && (await this.#ask());
    if (run !== this.#run) return;
    if (answer && answer.status !== 200) return this.#handle(answer, false);
    const source = new EventSource(this.#streamUrl(), { withCredentials: this.#credentials });
    this.#source = source;
    let [opened, streaming, quiet] = [false, false, true]; // quiet: nothing since the open
    const listen = (type, handle) => source.addEventListener(type, (e) => source === this.#source && handle(e));
    listen("open", () => {
      opened = streaming = quiet = true;
      this.#set("open", "");
    });
    listen("error", async () => {
      const gaveUp = source.readyState === EventSource.CLOSED;
      // An empty stream that ended: maybe the answer of a hub whose Redis is away.
      const ask = gaveUp || (streaming && quiet);
      streaming = false;
      this.#set("reconnecting", "the stream ended");
      const answer = ask && (await this.#ask());
      // EventSource still retrying is stopped only when the hub refuses or is away.
      const stop = answer && (gaveUp || answer.status === AWAY || refusal(answer.status));
      if (stop && source === this.#source) this.#handle(answer, opened);
    });
    listen(RESET_EVENT_TYPE, ({ data }) => {
      quiet = false;
      this.#emit("gap", parseResetNotice(data));
    });
    for (const type of this.#types) {
      listen(type, ({ lastEventId: id, data }) => {
        quiet = false;
        const at = id ? decodeCursor(id, this.#topics.length) : null;
        if (!this.#isNew(id, at)) return;
        this.#failures = 0;
        this.#emit("event", { id, type, data });
        if (!id) return;
        // In the task that handed it over: no reload can come in between.
        [this.cursor, this.#at] = [id, at];
        try {
          this.#storage?.setItem(this.#key, id);
        } catch {} // full storage: this page still resumes, from memory
      });
    }
  }

  // Stream IDs compare as integers; a composite is new if it moves any topic on. `at` is
  // `id` decoded, compared with the cursor decoded when it was stored (once per event).
  #isNew(id, at) {
    if (!id || !this.cursor) return true;
    if (!at || !this.#at) return id !== this.cursor;
    return at.some((p, i) => compareIds(p, this.#at[i]) > 0);
  }

  #handle({ status, reason }, opened) {
    if (status === AWAY) return this.#retry(AWAY, reason);
    if ((status === 401 || status === 403) && typeof this.#tokens === "function") {
      // A token that served a stream has expired: a new one at once; else wait first.
      return opened ? this.#connect(true) : this.#retry("reconnecting", reason, true);
    }
    if (refusal(status)) return this.#end(reason); // a bad topic or cursor, too many streams
    this.#retry("reconnecting", reason);
  }

  // About 1 s doubling to 30 s, ±25 %.
  #retry(state, reason, newToken = false) {
    this.#halt();
    const delay = Math.round(Math.min(30_000, 1000 * 2 ** this.#failures++) * (0.75 + Math.random() / 2));
    this.#set(state, `${reason}; retrying in ${(delay / 1000).toFixed(1)} s`);
    this.#timer = setTimeout(() => this.#connect(newToken), delay);
  }

  // The hub's answer to this stream's request: {status (0: none, or AWAY), reason}.
  async #ask() {
    const abort = new AbortController();
    try {
      const credentials = this.#credentials ? "include" : "same-origin";
      const response = await fetch(this.#streamUrl(), { credentials, signal: abort.signal });
      const { status, ok } = response;
      if (ok && response.headers.has("Hub-Unavailable")) return { status: AWAY, reason: "the hub's Redis is away" };
      const text = ok ? "the stream failed" : (await response.text()).trim().slice(0, 300);
      return { status, reason: `HTTP ${status}${text ? `: ${text}` : ""}` };
    } catch {
      return { status: 0, reason: "the hub cannot be reached" };
    } finally {
      abort.abort(); // a 200 is a live stream, not read here
    }
  }
}
