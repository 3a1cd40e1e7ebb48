// The panel that shows one client, native or Mercure: state, counters, warnings and its latest events.

import { SHOWN_EVENTS } from "./client.js";
import { formatBytes } from "./eventdata.js";
import { h, setAttr, setText } from "./dom.js";

const DATA_CHARS = 2_000;
const PREVIEW_BYTES = 256 * 1024;

function clock(date) {
  return date.toTimeString().slice(0, 8) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

function clip(text) {
  return text.length <= DATA_CHARS ? text : `${text.slice(0, DATA_CHARS)}… (${text.length - DATA_CHARS} more characters)`;
}

function flagLabel(flag) {
  if (!flag) return null;
  if (flag.kind === "gap") return h("span", { class: "flag flag-gap", text: `gap: ${flag.missing} missing` });
  if (flag.kind === "dupe") return h("span", { class: "flag flag-dupe", text: "duplicate" });
  return h("span", { class: "flag flag-order", text: "out of order" });
}

function binaryBody(data, id) {
  const filename = data.name || `event-${id || "data"}.bin`;
  return h(
    "div",
    { class: "ev-binary" },
    h("span", { class: "ev-file", text: data.name || "binary data" }),
    h("span", { class: "muted", text: ` ${data.mediaType} · ` }),
    h("span", { "data-testid": "size", text: formatBytes(data.size) }),
    " ",
    h("a", { href: data.url, download: filename, "data-testid": "download", text: "Download" }),
    data.mediaType.startsWith("image/") && data.size <= PREVIEW_BYTES
      ? h("img", { class: "ev-preview", src: data.url, alt: filename })
      : null,
  );
}

function dataBody(data, id) {
  if (data.kind === "binary") return binaryBody(data, id);
  const text = data.kind === "json" ? JSON.stringify(data.value, null, 2) : data.text;
  return h("pre", { class: `ev-data ev-${data.kind}`, text: clip(text) });
}

// The page knows an update is private only when its own form sent it so: updates
// from elsewhere carry no mark, private or not.
function privateMark() {
  return h("span", { class: "flag flag-private", "data-testid": "private", title: "sent private by this page's publish form", text: "private" });
}

function scopeLine(client) {
  const parts = [];
  for (const { label, values } of client.scope()) parts.push(`${parts.length ? " " : ""}${label} `, ...values.map((v) => h("code", { text: v })));
  return h("p", { class: "topics", "data-testid": "topics" }, ...parts);
}

// Whether a native panel's stream picked up where the page before the reload left off.
function startLine(client) {
  if (client.mode !== "native") return null;
  return h("p", { class: "start muted", "data-testid": "start" });
}

function accessLine(client) {
  if (client.mode !== "mercure") return null;
  const text = client.token
    ? "with a token (in the URL): public updates and the private ones it covers"
    : "anonymous: public updates only";
  return h("p", { class: "access muted", "data-testid": "access", text });
}

function eventItem(record, showTopic, isPrivate) {
  if (record.kind === "reset") {
    const { warning } = record;
    return h(
      "li",
      { class: "ev ev-reset", "data-testid": "event-reset" },
      h("div", { class: "ev-head" }, h("span", { class: "flag flag-reset", text: "stream reset" }), h("time", { text: clock(record.at) })),
      h("p", { text: `Events on ${warning.topic} after your cursor are gone (${warning.reason}); the stream goes on from ${warning.firstKept || "its oldest kept event"}.` }),
    );
  }
  const { data, flag } = record;
  return h(
    "li",
    {
      class: `ev${flag ? ` ev-${flag.kind}` : ""}`,
      "data-testid": "event",
      "data-id": record.id,
      "data-seq": data.seq ?? undefined,
    },
    h(
      "div",
      { class: "ev-head" },
      h("code", { class: "ev-id", text: record.id || "(no id)" }),
      record.type !== "message" ? h("span", { class: "ev-type", text: record.type }) : null,
      showTopic && record.topic ? h("span", { class: "ev-topic", text: record.topic }) : null,
      data.seq !== null ? h("span", { class: "ev-seq", text: `#${data.seq}` }) : null,
      flagLabel(flag),
      isPrivate(record.id) ? privateMark() : null,
      h("time", { text: clock(record.at) }),
    ),
    dataBody(data, record.id),
  );
}

function stat(label, testid) {
  const value = h("dd", { "data-testid": testid, text: "0" });
  return { value, element: h("div", { class: "stat" }, h("dt", { text: label }), value) };
}

export class ClientPanel {
  /** isPrivate(id): whether this page published the update with that ID as private. */
  constructor(client, { onRemove, isPrivate = () => false }) {
    this.client = client;
    this.isPrivate = isPrivate;
    this.count = stat("Received", "count");
    this.gaps = stat("Gaps", "gaps");
    this.dupes = stat("Duplicates", "dupes");
    this.lastId = h("code", { "data-testid": "last-id", text: "—" });
    this.state = h("span", { class: "badge", "data-testid": "state" });
    this.health = h("span", { class: "health", "data-testid": "health" });
    this.note = h("p", { class: "note", "data-testid": "note" });
    this.start = startLine(client);
    this.warnings = h("div", { class: "warnings", "data-testid": "warnings" });
    this.list = h("ol", { class: "events", "data-testid": "events", "aria-label": `Latest events of ${client.name}` });
    this.buttons = {
      disconnect: h("button", { type: "button", "data-testid": "disconnect", onclick: () => client.disconnect(), text: "Disconnect" }),
      resume: h("button", { type: "button", "data-testid": "resume", title: "Reconnect, resuming after the last event ID", onclick: () => client.resume(), text: "Resume" }),
      fresh: h("button", { type: "button", "data-testid": "fresh", title: "Clear and reconnect for new events only", onclick: () => client.fresh(), text: "Start fresh" }),
    };
    this.element = h(
      "article",
      { class: "panel card", "data-testid": "client-panel", "data-client": client.id, "data-mode": client.mode, "aria-label": client.name },
      h(
        "header",
        { class: "panel-head" },
        h("h3", { text: client.name }),
        this.state,
        h("button", { type: "button", class: "remove", "data-testid": "remove", "aria-label": `Remove ${client.name}`, title: "Remove", onclick: onRemove, text: "✕" }),
      ),
      scopeLine(client),
      this.start,
      accessLine(client),
      h(
        "dl",
        { class: "stats" },
        this.count.element,
        this.gaps.element,
        this.dupes.element,
        h("div", { class: "stat wide" }, h("dt", { text: "Last event ID" }), h("dd", {}, this.lastId)),
      ),
      h("div", { class: "status-line" }, this.health, this.note),
      this.warnings,
      h("div", { class: "actions" }, this.buttons.disconnect, this.buttons.resume, this.buttons.fresh),
      this.list,
    );
  }

  render() {
    const c = this.client;
    const { gaps, missing, dupes, outOfOrder } = c.check;
    setAttr(this.element, "data-state", c.state);
    setText(this.state, c.state);
    setAttr(this.state, "class", `badge state-${c.state}`);
    setText(this.count.value, c.count);
    setText(this.gaps.value, gaps);
    setAttr(this.gaps.value, "class", gaps ? "bad" : "");
    setAttr(this.gaps.value, "title", `${missing} events missing`);
    setText(this.dupes.value, dupes);
    setAttr(this.dupes.value, "class", dupes ? "bad" : "");
    setText(this.lastId, c.lastEventId || "—");
    const issues = [
      gaps && `${missing} missing`,
      dupes && `${dupes} duplicate${dupes === 1 ? "" : "s"}`,
      outOfOrder && `${outOfOrder} out of order`,
    ].filter(Boolean);
    const health = issues.length ? `⚠ ${issues.join(", ")}` : c.count ? "✓ in order" : "no events yet";
    setText(this.health, health);
    setAttr(this.health, "class", `health ${issues.length ? "bad" : c.count ? "good" : ""}`);
    const opened = c.opened > 1 ? `connected ${c.opened}×` : "";
    setText(this.note, [c.note, opened].filter(Boolean).join(" · "));
    if (this.start) setText(this.start, c.start);
    this.buttons.disconnect.disabled = c.state === "closed";
    this.buttons.resume.disabled = !c.lastEventId;
    this.#renderWarnings();
    this.#renderEvents();
  }

  #renderWarnings() {
    const stamp = this.client.warnings.map((w) => w.at.getTime()).join();
    if (this.warnings.dataset.stamp === stamp) return;
    this.warnings.dataset.stamp = stamp;
    this.warnings.replaceChildren(
      ...this.client.warnings.map((w) =>
        h("p", {
          class: "warning",
          role: "alert",
          "data-testid": "warning",
          text: `⚠ Stream reset on ${w.topic}: ${w.reason}${w.firstKept ? `, first kept event ${w.firstKept}` : ""}.`,
        }),
      ),
    );
  }

  /** The page's publish form was told `id` is private: mark it if it was shown first. */
  markPrivate(id) {
    for (const item of this.list.children) {
      if (item.dataset.id === id && !item.querySelector("[data-testid=private]")) item.querySelector("time").before(privateMark());
    }
  }

  #renderEvents() {
    if (this.client.cleared) {
      this.list.replaceChildren();
      this.client.cleared = false;
    }
    const pending = this.client.takePending();
    if (pending.length === 0) return;
    const showTopic = this.client.topics.length > 1;
    const fragment = document.createDocumentFragment();
    for (let i = pending.length - 1; i >= 0; i--) fragment.append(eventItem(pending[i], showTopic, this.isPrivate));
    if (pending.length >= SHOWN_EVENTS) this.list.replaceChildren(fragment);
    else {
      this.list.prepend(fragment);
      while (this.list.childElementCount > SHOWN_EVENTS) this.list.lastElementChild.remove();
    }
  }
}
