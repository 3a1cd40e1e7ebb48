// The publish form: one event, a flood of numbered events, or a file, via the
// hub's native POST /publish or, in Mercure mode, POST /.well-known/mercure.

import { RESET_EVENT_TYPE } from "./client.js";
import { binaryDataUrl, formatBytes } from "./eventdata.js";
import { MERCURE_PATH, idProblem, iris, topicProblem, typeProblem, updateBody } from "./mercure.js";

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

const HINTS = {
  native: {
    401: "type the hub's publish token, or a JWT that may publish",
    403: "this token may not publish on that topic",
    404: "publishing is off on this hub (it has no publish token configured)",
  },
  mercure: {
    401: "type the hub's publish token, or a JWT whose mercure claim may publish",
    403: "this token may not publish on one of these topics",
  },
};

function explain(status, reason, hints) {
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

/** POSTs to the hub; resolves to the answer, or throws a PublishError saying why not. */
async function post(path, { token, contentType, body, hints }) {
  const headers = { "Content-Type": contentType };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method: "POST", headers, body });
  } catch {
    throw new PublishError("the hub cannot be reached");
  }
  if (!response.ok) {
    const reason = (await response.text()).trim().slice(0, REASON_CHARS);
    throw new PublishError(explain(response.status, reason, hints));
  }
  return response;
}

/** POST /publish; resolves to the new event's ID. */
export async function publish({ topic, data, type, token }) {
  const body = JSON.stringify(type ? { topic, data, type } : { topic, data });
  const response = await post("publish", { token, contentType: "application/json", body, hints: HINTS.native });
  const answer = await response.json();
  return String(answer.id);
}

/** POST /.well-known/mercure, form-encoded; resolves to the update's ID (the answer's text). */
export async function publishMercure({ topics, data, type, id, private: isPrivate, token }) {
  const body = updateBody({ topics, data, type, id, private: isPrivate });
  const contentType = "application/x-www-form-urlencoded";
  const response = await post(MERCURE_PATH, { token, contentType, body: body.toString(), hints: HINTS.mercure });
  return (await response.text()).trim();
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

  /**
   * onPublished(topic, id, {mercure, private}): an event went out (`topic` is
   * the first of a Mercure update's). onType(type): clients should listen for it.
   */
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
    for (const radio of form.querySelectorAll("input[name=mode]")) radio.addEventListener("change", () => this.#showMode());
    this.#showMode();
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

  get mercure() {
    return this.fields.mode?.value === "mercure";
  }

  /** Shows the fields of the chosen API only. */
  #showMode() {
    this.form.dataset.mode = this.mercure ? "mercure" : "native";
    for (const element of this.form.querySelectorAll("[data-only]")) element.hidden = element.dataset.only !== this.form.dataset.mode;
  }

  #common() {
    const type = this.fields.type.value.trim();
    const token = this.fields.token.value.trim();
    if (this.mercure) return this.#mercureCommon(type, token);
    const topic = this.fields.topic.value.trim();
    if (!TOPIC.test(topic)) throw new PublishError("the topic must be 1-1024 characters, no spaces or control characters");
    const problem = eventTypeProblem(type);
    if (problem) throw new PublishError(problem);
    if (type) this.onType(type);
    return { topic, type, token, send: publish };
  }

  #mercureCommon(type, token) {
    const topics = iris(this.fields.topic.value);
    if (topics.length === 0) throw new PublishError("name the update's topic");
    const id = this.fields.id.value.trim();
    const problem = topics.map(topicProblem).find(Boolean) || typeProblem(type) || idProblem(id);
    if (problem) throw new PublishError(problem);
    if (type) this.onType(type);
    const isPrivate = this.fields.private.checked;
    return {
      topic: topics.join(" "),
      type,
      token,
      mercure: true,
      private: isPrivate,
      send: ({ data }) => publishMercure({ topics, data, type, id, private: isPrivate, token }),
    };
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

  #sent(common, id) {
    this.sent += 1;
    this.onPublished(common.topic, id, { mercure: Boolean(common.mercure), private: Boolean(common.private) });
  }

  async #flood() {
    const common = this.#common();
    const count = Number(this.fields.count.value || 1);
    const rate = Number(this.fields.rate.value || 0);
    if (!Number.isInteger(count) || count < 1 || count > MAX_COUNT) throw new PublishError(`the count must be a whole number from 1 to ${MAX_COUNT}`);
    if (!(rate >= 0)) throw new PublishError("the rate must be 0 (as fast as possible) or more events per second");
    if (common.mercure && count > 1 && this.fields.id.value.trim()) throw new PublishError("an own ID names one update: leave it empty to send several");
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
        id = await common.send({ ...common, data });
      } catch (error) {
        throw new PublishError(`${done ? `stopped after ${done} events: ` : ""}${error.message}`);
      }
      done += 1;
      this.#sent(common, id);
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
    const what = common.mercure ? `${common.private ? "private " : ""}update` : "event";
    this.#say(`${verb} ${what}${done === 1 ? "" : "s"} to ${common.topic}${pace}; last ID ${id}`, "ok");
  }

  async #sendFile() {
    const common = this.#common();
    const file = this.fields.file.files[0];
    if (!file) throw new PublishError("choose a file first");
    const bytes = new Uint8Array(await file.arrayBuffer());
    const data = binaryDataUrl(bytes, file.type, file.name);
    const id = await common.send({ ...common, data });
    this.#sent(common, id);
    this.#say(`Sent ${file.name} (${formatBytes(bytes.length)}) to ${common.topic}; ID ${id}`, "ok");
  }
}
