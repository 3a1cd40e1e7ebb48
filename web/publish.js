// The publish form: one event, a flood of numbered events, or a file, via POST /publish.

import { RESET_EVENT_TYPE } from "./client.js";
import { binaryDataUrl, formatBytes } from "./eventdata.js";

// The grammars of hub/topics.py and hub/events.py (tests/test_web_protocol.py keeps them in step).
// 1-1024 characters, no spaces or control characters (hub/topics.py): IRIs are topics.
export const TOPIC = /^[^\x00-\x20\x7f-\xa0\ud800-\udfff]{1,1024}$/u;
export const EVENT_TYPE = /^[A-Za-z0-9_\-.:/]{1,64}$/;
/** Types the hub itself sends; a publisher may not use them, nor any `hub-` type. */
export const RESERVED_EVENT_TYPES = [RESET_EVENT_TYPE];
export const RESERVED_EVENT_TYPE_PREFIX = "hub-";
const TOKEN_KEY = "sse-hub-publish-token";
const STATUS_EVERY_MS = 150;
const MAX_COUNT = 100_000;
const REASON_CHARS = 300;

export class PublishError extends Error {}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function explain(status, reason) {
  const hints = {
    401: "type the hub's publish token, or a JWT that may publish",
    403: "this token may not publish on that topic",
    404: "publishing is off on this hub (it has no publish token configured)",
  };
  const hint = hints[status] ? ` (${hints[status]})` : "";
  return `HTTP ${status}${reason ? `: ${reason}` : ""}${hint}`;
}

/** Why the hub would refuse an event type ("" is the default, `message`), or "" when it is fine. */
export function eventTypeProblem(type) {
  if (RESERVED_EVENT_TYPES.includes(type) || type.startsWith(RESERVED_EVENT_TYPE_PREFIX)) {
    return `the event type ${type} is reserved for the hub's own notices (${RESERVED_EVENT_TYPES.join(", ")}, ${RESERVED_EVENT_TYPE_PREFIX}*)`;
  }
  if (type && !EVENT_TYPE.test(type)) return "the event type must be 1-64 characters from A-Z a-z 0-9 _ - . / :";
  return "";
}

/** POST /publish; resolves to the new event's ID. */
export async function publish({ topic, data, type, token }) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const body = type ? { topic, data, type } : { topic, data };
  let response;
  try {
    response = await fetch("publish", { method: "POST", headers, body: JSON.stringify(body) });
  } catch {
    throw new PublishError("the hub cannot be reached");
  }
  if (!response.ok) {
    const reason = (await response.text()).trim().slice(0, REASON_CHARS);
    throw new PublishError(explain(response.status, reason));
  }
  const answer = await response.json();
  return String(answer.id);
}

/** The data of the i-th event of a flood: JSON carrying `seq` (and `run`, which tells floods apart). */
export function floodData(text, seq, run) {
  let base = {};
  if (text.trim()) {
    try {
      const value = JSON.parse(text);
      base = value !== null && typeof value === "object" && !Array.isArray(value) ? value : { value };
    } catch {
      base = { text };
    }
  }
  return JSON.stringify(Object.assign({ seq, run }, base, { seq, run }));
}

export class PublishForm {
  #stopping = false;
  #running = false;

  /** onPublished(topic, id): an event went out. onType(type): clients should listen for it. */
  constructor(form, { onPublished, onType }) {
    this.form = form;
    this.fields = form.elements;
    this.status = form.querySelector("[data-testid=publish-status]");
    this.stopButton = form.querySelector("[data-testid=publish-stop]");
    this.startButtons = form.querySelectorAll("[data-testid=publish-send], [data-testid=publish-file]");
    this.onPublished = onPublished;
    this.onType = onType;
    this.sent = 0;
    this.fields.token.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
    this.fields.token.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, this.fields.token.value));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#run(() => this.#flood());
    });
    this.stopButton.addEventListener("click", () => {
      this.#stopping = true;
    });
    form.querySelector("[data-testid=publish-file]").addEventListener("click", () => this.#run(() => this.#sendFile()));
  }

  #say(text, kind = "") {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
  }

  #common() {
    const topic = this.fields.topic.value.trim();
    const type = this.fields.type.value.trim();
    if (!TOPIC.test(topic)) throw new PublishError("the topic must be 1-1024 characters, no spaces or control characters");
    const problem = eventTypeProblem(type);
    if (problem) throw new PublishError(problem);
    if (type) this.onType(type);
    return { topic, type, token: this.fields.token.value.trim() };
  }

  async #run(job) {
    if (this.#running) return;
    this.#running = true;
    this.#stopping = false;
    this.form.dataset.busy = "true";
    this.stopButton.disabled = false;
    for (const button of this.startButtons) button.disabled = true;
    try {
      await job();
    } catch (error) {
      this.#say(error instanceof PublishError ? error.message : String(error), "error");
    } finally {
      this.#running = false;
      delete this.form.dataset.busy;
      this.stopButton.disabled = true;
      for (const button of this.startButtons) button.disabled = false;
    }
  }

  #sent(topic, id) {
    this.sent += 1;
    this.onPublished(topic, id);
  }

  async #flood() {
    const common = this.#common();
    const count = Number(this.fields.count.value || 1);
    const rate = Number(this.fields.rate.value || 0);
    if (!Number.isInteger(count) || count < 1 || count > MAX_COUNT) throw new PublishError(`the count must be a whole number from 1 to ${MAX_COUNT}`);
    if (!(rate >= 0)) throw new PublishError("the rate must be 0 (as fast as possible) or more events per second");
    const text = this.fields.data.value;
    const run = Math.random().toString(36).slice(2, 8);
    const started = performance.now();
    let shown = started;
    let id = "";
    let done = 0;
    // One request at a time: concurrent requests could reach the hub out of order.
    for (let seq = 1; seq <= count && !this.#stopping; seq++) {
      const data = count > 1 ? floodData(text, seq, run) : text;
      try {
        id = await publish({ ...common, data });
      } catch (error) {
        throw new PublishError(`${done ? `stopped after ${done} events: ` : ""}${error.message}`);
      }
      done += 1;
      this.#sent(common.topic, id);
      const now = performance.now();
      if (now - shown > STATUS_EVERY_MS) {
        shown = now;
        this.#say(`sending ${done} of ${count}…`, "busy");
      }
      if (rate > 0) {
        const wait = started + (seq * 1000) / rate - performance.now();
        if (wait > 0) await sleep(wait);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const pace = done > 1 ? ` in ${seconds.toFixed(1)} s (${Math.round(done / seconds)}/s)` : "";
    const verb = done < count ? `Stopped after ${done} of ${count}` : `Sent ${done}`;
    this.#say(`${verb} event${done === 1 ? "" : "s"} to ${common.topic}${pace}; last ID ${id}`, "ok");
  }

  async #sendFile() {
    const common = this.#common();
    const file = this.fields.file.files[0];
    if (!file) throw new PublishError("choose a file first");
    const bytes = new Uint8Array(await file.arrayBuffer());
    const data = binaryDataUrl(bytes, file.type, file.name);
    const id = await publish({ ...common, data });
    this.#sent(common.topic, id);
    this.#say(`Sent ${file.name} (${formatBytes(bytes.length)}) to ${common.topic}; ID ${id}`, "ok");
  }
}
