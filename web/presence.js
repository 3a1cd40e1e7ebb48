// The presence view: Mercure's active subscriptions, listed by the subscriptions
// API and kept current by the subscription events the hub publishes (private
// updates, so the token must cover them).
//
// The list is read first and its lastEventID is where the stream starts: no
// event between the two is missed, and one the list already reflects changes nothing.

import { h, setAttr, setText } from "./dom.js";
import { SUBSCRIPTIONS_PATH, SUBSCRIPTIONS_PATTERN, subscribeUrl } from "./mercure.js";
import { Roster, parseSubscription } from "./roster.js";

const REASON_CHARS = 300;

function subscriptionItem(document) {
  return h(
    "li",
    { class: "subscription", "data-testid": "subscription", "data-match": document.match, "data-match-type": document.matchType },
    h("span", { class: "ev-type", text: document.matchType }),
    " ",
    h("code", { "data-testid": "subscription-match", text: document.match }),
    h("div", { class: "muted subscriber", "data-testid": "subscriber", text: document.subscriber }),
    document.payload !== undefined ? h("pre", { class: "ev-data", text: JSON.stringify(document.payload) }) : null,
  );
}

function changeItem({ kind, subscription, at }) {
  return h(
    "li",
    { class: `change change-${kind}`, "data-testid": "presence-change", "data-kind": kind },
    `${kind === "joined" ? "▲ joined" : "▼ left"}: ${subscription.matchType} `,
    h("code", { text: subscription.match }),
    h("time", { text: at.toTimeString().slice(0, 8) }),
  );
}

export class PresenceView {
  #source = null;
  #stamp = 0;

  /** onChange(): something to show changed (the page renders on its next frame). */
  constructor(root, { onChange }) {
    this.form = root.querySelector("#presence-form");
    this.token = this.form.elements.token;
    this.stopButton = root.querySelector("[data-testid=presence-stop]");
    this.status = root.querySelector("[data-testid=presence-status]");
    this.count = root.querySelector("[data-testid=presence-count]");
    this.list = root.querySelector("[data-testid=subscriptions]");
    this.changes = root.querySelector("[data-testid=presence-changes]");
    this.onChange = onChange;
    this.roster = new Roster();
    this.state = "closed";
    this.note = "";
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.watch();
    });
    this.stopButton.addEventListener("click", () => this.stop());
  }

  get connected() {
    return this.#source !== null;
  }

  async watch() {
    this.stop();
    const token = this.token.value.trim();
    const stamp = ++this.#stamp;
    this.#set("connecting", "reading the subscriptions API…");
    let answer;
    try {
      answer = await this.#fetchList(token);
    } catch (error) {
      if (stamp === this.#stamp) this.#set("closed", error.message);
      return;
    }
    if (stamp !== this.#stamp) return; // stopped, or watching again, meanwhile
    this.roster.load(answer);
    const url = subscribeUrl({ patterns: [SUBSCRIPTIONS_PATTERN], token, lastEventId: String(answer.lastEventID ?? "") });
    const source = new EventSource(url);
    this.#source = source;
    source.addEventListener("open", () => source === this.#source && this.#set("open", ""));
    source.addEventListener("error", () => {
      if (source !== this.#source) return;
      if (source.readyState === EventSource.CLOSED) this.#set("closed", "the stream failed (does the token cover the subscription events?)");
      else this.#set("reconnecting", "connection lost; the browser reconnects by itself");
    });
    source.addEventListener("message", (event) => {
      if (source !== this.#source) return;
      const document = parseSubscription(event.data);
      if (document && this.roster.apply(document)) this.onChange();
    });
    this.onChange();
  }

  stop() {
    this.#stamp += 1;
    if (this.#source) this.#source.close();
    this.#source = null;
    this.#set("closed", "");
  }

  async #fetchList(token) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    let response;
    try {
      response = await fetch(SUBSCRIPTIONS_PATH.slice(1), { headers });
    } catch {
      throw new Error("the hub cannot be reached");
    }
    if (!response.ok) {
      const reason = (await response.text()).trim().slice(0, REASON_CHARS);
      throw new Error(`HTTP ${response.status}${reason ? `: ${reason}` : ""}`);
    }
    return response.json();
  }

  #set(state, note) {
    this.state = state;
    this.note = note;
    this.onChange();
  }

  render() {
    const watching = this.state !== "closed";
    this.stopButton.disabled = !watching;
    setAttr(this.status, "data-state", this.state);
    setText(this.status, [this.state, this.note].filter(Boolean).join(": "));
    const list = this.roster.list;
    setText(this.count, this.state === "closed" && list.length === 0 ? "" : `${list.length} active`);
    const stamp = list.map((d) => d.id).join("\n");
    if (this.list.dataset.stamp !== stamp) {
      this.list.dataset.stamp = stamp;
      this.list.replaceChildren(...list.map(subscriptionItem));
    }
    const changes = this.roster.changes;
    const changeStamp = changes.map((c) => `${c.kind} ${c.subscription.id} ${c.at.getTime()}`).join("\n");
    if (this.changes.dataset.stamp !== changeStamp) {
      this.changes.dataset.stamp = changeStamp;
      this.changes.replaceChildren(...changes.map(changeItem));
    }
  }
}
