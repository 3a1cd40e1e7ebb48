// The summary: deliveries across clients, events per second, and each client's lag.

import { compareIds } from "./cursor.js";
import { h, setAttr, setText } from "./dom.js";

const LOG_LIMIT = 10_000;
const RATE_WINDOW_MS = 5_000;

/** The newest event IDs seen per topic (from any client or from publishing), sorted. */
export class TopicLog {
  #ids = new Map();
  #trimmed = new Set();

  add(topic, id) {
    let ids = this.#ids.get(topic);
    if (!ids) this.#ids.set(topic, (ids = []));
    if (ids.length === 0 || compareIds(id, ids[ids.length - 1]) > 0) ids.push(id);
    else {
      const at = this.#firstAfter(ids, id);
      if (at > 0 && compareIds(ids[at - 1], id) === 0) return;
      ids.splice(at, 0, id);
    }
    if (ids.length > LOG_LIMIT) {
      ids.splice(0, ids.length - LOG_LIMIT + LOG_LIMIT / 10);
      this.#trimmed.add(topic);
    }
  }

  newest(topic) {
    const ids = this.#ids.get(topic);
    return ids && ids.length ? ids[ids.length - 1] : null;
  }

  /** How many known events come after `id` (`atLeast` when older ones were forgotten). */
  countAfter(topic, id) {
    const ids = this.#ids.get(topic) ?? [];
    const at = id ? this.#firstAfter(ids, id) : 0;
    return { count: ids.length - at, atLeast: at === 0 && this.#trimmed.has(topic) };
  }

  #firstAfter(ids, id) {
    let lo = 0;
    let hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareIds(ids[mid], id) > 0) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** `{events, ms, atLeast}` a client is behind the newest events the page knows of. */
export function lagOf(client, log) {
  let events = 0;
  let ms = 0;
  let atLeast = false;
  for (const topic of client.topics) {
    const newest = log.newest(topic);
    if (!newest) continue;
    const position = client.positions.get(topic) ?? client.baseline.get(topic) ?? null;
    const behind = log.countAfter(topic, position);
    events += behind.count;
    atLeast ||= behind.atLeast;
    if (position && behind.count) ms = Math.max(ms, Number(newest[0] - position[0]));
  }
  return { events, ms, atLeast };
}

export class Summary {
  #samples = [];

  constructor({ log, clients, published }) {
    this.log = log;
    this.clients = clients;
    this.published = published;
    this.total = h("dd", { "data-testid": "total-delivered", text: "0" });
    this.rate = h("dd", { "data-testid": "rate", text: "0" });
    this.sent = h("dd", { "data-testid": "published", text: "0" });
    this.rows = h("tbody", { "data-testid": "lag-rows" });
    this.element = h(
      "div",
      { class: "summary-body" },
      h(
        "dl",
        { class: "stats" },
        h("div", { class: "stat" }, h("dt", { text: "Delivered" }), this.total),
        h("div", { class: "stat" }, h("dt", { text: "Events/s" }), this.rate),
        h("div", { class: "stat" }, h("dt", { text: "Published here" }), this.sent),
      ),
      h(
        "table",
        { class: "lag" },
        h("caption", { text: "Lag behind the newest event" }),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Client" }), h("th", { scope: "col", text: "State" }), h("th", { scope: "col", text: "Received" }), h("th", { scope: "col", text: "Lag" }))),
        this.rows,
      ),
    );
  }

  delivered() {
    let total = 0;
    for (const client of this.clients()) total += client.count;
    return total;
  }

  /** Called on a timer: events per second over the last few seconds. */
  sample(now = performance.now()) {
    this.#samples.push([now, this.delivered()]);
    while (this.#samples.length > 2 && now - this.#samples[0][0] > RATE_WINDOW_MS) this.#samples.shift();
  }

  #eventsPerSecond() {
    if (this.#samples.length < 2) return 0;
    const [t0, n0] = this.#samples[0];
    const [t1, n1] = this.#samples[this.#samples.length - 1];
    return t1 > t0 ? Math.max(0, ((n1 - n0) * 1000) / (t1 - t0)) : 0;
  }

  render() {
    setText(this.total, this.delivered());
    setText(this.rate, Math.round(this.#eventsPerSecond()));
    setText(this.sent, this.published());
    const clients = this.clients();
    if (this.rows.childElementCount !== clients.length || [...this.rows.children].some((row, i) => row.dataset.client !== String(clients[i].id))) {
      this.rows.replaceChildren(
        ...clients.map((client) =>
          h(
            "tr",
            { "data-client": client.id, "data-testid": "lag-row" },
            h("th", { scope: "row", text: client.name }),
            h("td", { "data-testid": "lag-state" }),
            h("td", { "data-testid": "lag-count" }),
            h("td", { "data-testid": "lag" }),
          ),
        ),
      );
    }
    clients.forEach((client, i) => {
      const [, state, count, lag] = this.rows.children[i].children;
      setText(state, client.state);
      setAttr(state, "class", `state-${client.state}`);
      setText(count, client.count);
      if (!client.tracksLag) {
        setText(lag, "—");
        setAttr(lag, "title", "Mercure IDs are no positions: the lag cannot be told");
        return;
      }
      const behind = lagOf(client, this.log);
      setText(lag, behind.events === 0 ? "0" : `${behind.atLeast ? "≥" : ""}${behind.events} events${behind.ms ? ` · ${behind.ms} ms` : ""}`);
      setAttr(lag, "class", behind.events ? "lagging" : "");
    });
  }
}
