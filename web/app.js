// The page: clients (native or Mercure) added and removed, the publish form,
// the summary and the Mercure presence view.
// Query parameters: ?topic=NAME (default topic), ?clients=N (how many to start
// with, 3 by default), ?types=a,b (named event types to listen for). A reload
// makes the same native panels again, and each resumes after its last event.

import { HubClient } from "./client.js";
import { parseId } from "./cursor.js";
import { FrameScheduler, setText } from "./dom.js";
import { MercureClient } from "./mercure-client.js";
import { iris, matcherProblem } from "./mercure.js";
import { ClientPanel } from "./panel.js";
import { PresenceView } from "./presence.js";
import { PublishForm, TOPIC } from "./publish.js";
import { Summary, TopicLog } from "./summary.js";

const SAMPLE_MS = 500;
const MAX_CLIENTS = 50;
const DEFAULT_TOPIC = "demo";
const DEFAULT_CLIENTS = 3;
// Browsers' limit of HTTP/1.1 connections to one host; each EventSource holds one.
// HTTP/2 and HTTP/3 carry every stream over one connection: no such limit.
const BROWSER_CONNECTIONS = 6;
const MULTIPLEXED = new Set(["h2", "h3"]);
// IDs of the private updates this page published, remembered for marking them in panels.
const PRIVATE_IDS = 1_000;

/** Whether this page came over HTTP/2 or 3, as the hub's streams then do. */
function multiplexed() {
  return MULTIPLEXED.has(performance.getEntriesByType?.("navigation")[0]?.nextHopProtocol);
}

function words(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

class App {
  #clients = [];
  #panels = new Map();
  #nextId = 1;
  #privateIds = new Set();

  constructor(doc, params) {
    this.doc = doc;
    this.scheduler = new FrameScheduler();
    this.log = new TopicLog();
    this.types = new Set(words(params.get("types") ?? ""));
    this.container = doc.querySelector("[data-testid=panels]");
    this.clientCount = doc.querySelector("[data-testid=client-count]");
    this.connectionNote = doc.querySelector("[data-testid=connection-note]");
    this.summary = new Summary({
      log: this.log,
      clients: () => this.#clients,
      published: () => this.publisher.sent,
    });
    doc.querySelector("#summary").append(this.summary.element);
    this.publisher = new PublishForm(doc.querySelector("#publish-form"), {
      onPublished: (topic, id, how) => (how.mercure ? this.#published(id, how) : this.#known(topic, parseId(id))),
      onType: (type) => this.listen(type),
    });
    this.presence = new PresenceView(doc.querySelector("[data-testid=presence]"), {
      onChange: () => {
        this.scheduler.mark(this.presence);
        this.#counted();
      },
    });
    this.addForm = doc.querySelector("#add-client");
    this.addError = doc.querySelector("[data-testid=add-error]");
    this.addForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#addFromForm();
    });
    this.mercureForm = doc.querySelector("#add-mercure");
    this.mercureError = doc.querySelector("[data-testid=mercure-error]");
    this.mercureForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#addMercureFromForm();
    });
    doc.querySelector("[data-testid=disconnect-all]").addEventListener("click", () => this.#clients.forEach((c) => c.disconnect()));
    doc.querySelector("[data-testid=resume-all]").addEventListener("click", () => this.#clients.forEach((c) => c.resume()));
    const topic = TOPIC.test(params.get("topic") ?? "") ? params.get("topic") : DEFAULT_TOPIC;
    this.addForm.elements.topics.value = topic;
    this.publisher.fields.topic.value = topic;
    const asked = Number.parseInt(params.get("clients") ?? "", 10);
    const start = Number.isNaN(asked) ? DEFAULT_CLIENTS : Math.max(0, Math.min(asked, MAX_CLIENTS));
    for (let i = 0; i < start; i++) this.addClient([topic]);
    setInterval(() => {
      this.summary.sample();
      this.scheduler.mark(this.summary);
    }, SAMPLE_MS);
  }

  #known(topic, id) {
    if (id) this.log.add(topic, id);
    this.scheduler.mark(this.summary);
  }

  /** A Mercure update went out; a private one is marked in the panels that show it. */
  #published(id, how) {
    this.scheduler.mark(this.summary);
    if (!how.private || !id) return;
    this.#privateIds.add(id);
    if (this.#privateIds.size > PRIVATE_IDS) this.#privateIds.delete(this.#privateIds.values().next().value);
    // The update may have reached a panel before the hub's answer reached the form.
    for (const panel of this.#panels.values()) panel.markPrivate(id);
  }

  listen(type) {
    this.types.add(type);
    for (const client of this.#clients) client.listen(type);
  }

  addClient(topics) {
    return this.#add((onChange) => new HubClient({
      id: this.#nextId++,
      topics,
      types: this.types,
      onChange,
      onEvent: (topic, id) => this.log.add(topic, id),
      newestId: (topic) => this.log.newest(topic),
    }));
  }

  /** exact, patterns: the matchers; token: "" for an anonymous subscriber. */
  addMercureClient({ exact, patterns, token }) {
    return this.#add((onChange) => new MercureClient({ id: this.#nextId++, exact, patterns, token, types: this.types, onChange }));
  }

  #add(make) {
    let panel = null;
    const client = make(() => {
      if (panel) this.scheduler.mark(panel);
      this.scheduler.mark(this.summary);
    });
    panel = new ClientPanel(client, {
      onRemove: () => this.removeClient(client),
      isPrivate: (id) => this.#privateIds.has(id),
    });
    this.#clients.push(client);
    this.#panels.set(client, panel);
    this.container.append(panel.element);
    client.connect();
    this.#counted();
    return client;
  }

  removeClient(client) {
    client.dispose();
    this.#panels.get(client)?.element.remove();
    this.#panels.delete(client);
    this.#clients = this.#clients.filter((c) => c !== client);
    this.#counted();
  }

  #counted() {
    const n = this.#clients.length;
    setText(this.clientCount, `${n} client${n === 1 ? "" : "s"}`);
    const streams = n + (this.presence?.connected ? 1 : 0);
    this.connectionNote.hidden = streams <= BROWSER_CONNECTIONS - 1 || multiplexed();
    this.scheduler.mark(this.summary);
  }

  #addFromForm() {
    const fields = this.addForm.elements;
    const topics = words(fields.topics.value);
    const bad = topics.find((t) => !TOPIC.test(t));
    let error = "";
    if (topics.length === 0) error = "Type at least one topic.";
    else if (bad) error = `“${bad.slice(0, 40)}” is not a topic: use 1-1024 characters, no spaces or control characters`;
    else if (this.#clients.length >= MAX_CLIENTS) error = `At most ${MAX_CLIENTS} clients.`;
    setText(this.addError, error);
    if (error) return;
    for (const type of words(fields.types.value)) this.listen(type);
    this.addClient(topics);
  }

  #addMercureFromForm() {
    const fields = this.mercureForm.elements;
    const exact = iris(fields.exact.value);
    const patterns = iris(fields.patterns.value);
    const problem = [...exact, ...patterns].map(matcherProblem).find(Boolean);
    let error = "";
    if (exact.length + patterns.length === 0) error = "Type at least one exact topic or URL pattern (* for every topic).";
    else if (problem) error = problem;
    else if (this.#clients.length >= MAX_CLIENTS) error = `At most ${MAX_CLIENTS} clients.`;
    setText(this.mercureError, error);
    if (error) return;
    this.addMercureClient({ exact, patterns, token: fields.token.value.trim() });
  }
}

new App(document, new URLSearchParams(location.search));
