// The page: clients added and removed, the publish form and the summary.
// Query parameters: ?topic=NAME (default topic), ?clients=N (how many to start
// with, 3 by default), ?types=a,b (named event types to listen for).

import { HubClient } from "./client.js";
import { parseId } from "./cursor.js";
import { FrameScheduler, setText } from "./dom.js";
import { ClientPanel } from "./panel.js";
import { PublishForm, TOPIC } from "./publish.js";
import { Summary, TopicLog } from "./summary.js";

const SAMPLE_MS = 500;
const MAX_CLIENTS = 50;
const DEFAULT_TOPIC = "demo";
const DEFAULT_CLIENTS = 3;
// Browsers' limit of HTTP/1.1 connections to one host; each EventSource holds one.
const BROWSER_CONNECTIONS = 6;

function words(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

class App {
  #clients = [];
  #panels = new Map();
  #nextId = 1;

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
      onPublished: (topic, id) => this.#known(topic, parseId(id)),
      onType: (type) => this.listen(type),
    });
    this.addForm = doc.querySelector("#add-client");
    this.addError = doc.querySelector("[data-testid=add-error]");
    this.addForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#addFromForm();
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

  listen(type) {
    this.types.add(type);
    for (const client of this.#clients) client.listen(type);
  }

  addClient(topics) {
    const client = new HubClient({
      id: this.#nextId++,
      topics,
      types: this.types,
      onChange: () => {
        this.scheduler.mark(panel);
        this.scheduler.mark(this.summary);
      },
      onEvent: (topic, id) => this.log.add(topic, id),
      newestId: (topic) => this.log.newest(topic),
    });
    const panel = new ClientPanel(client, { onRemove: () => this.removeClient(client) });
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
    this.connectionNote.hidden = n <= BROWSER_CONNECTIONS - 1 || location.protocol !== "http:";
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
}

new App(document, new URLSearchParams(location.search));
