// Mercure's active subscriptions as the page knows them: the subscriptions API's
// list, kept current by subscription events (hub/mercure/presence.py). Pure: no DOM.

const MAX_CHANGES = 10;

/** A subscription document from an event's data, or null when it is not one. */
export function parseSubscription(text) {
  let document;
  try {
    document = JSON.parse(text);
  } catch {
    return null;
  }
  if (document === null || typeof document !== "object" || typeof document.id !== "string") return null;
  if (document.type !== "Subscription" || typeof document.active !== "boolean") return null;
  return document;
}

export class Roster {
  #active = new Map();
  /** The latest joins and leaves, newest first: `{kind: "joined"|"left", subscription, at}`. */
  changes = [];

  /** Starts over from the API's answer, `{subscriptions: [...], lastEventID}`. */
  load(answer) {
    this.#active.clear();
    this.changes = [];
    for (const document of answer.subscriptions ?? []) {
      if (document && typeof document.id === "string") this.#active.set(document.id, document);
    }
  }

  /**
   * One subscription event; returns "joined", "left" or "" (nothing changed:
   * the API's list already held it, or it ended before the page heard of it).
   * Events replayed from the API's lastEventID may repeat what the list says:
   * applying one twice changes nothing.
   */
  apply(document) {
    const known = this.#active.has(document.id);
    let kind = "";
    if (document.active && !known) kind = "joined";
    else if (!document.active && known) kind = "left";
    if (document.active) this.#active.set(document.id, document);
    else this.#active.delete(document.id);
    if (kind) {
      this.changes.unshift({ kind, subscription: document, at: new Date() });
      this.changes.length = Math.min(this.changes.length, MAX_CHANGES);
    }
    return kind;
  }

  /** The active subscriptions, by ID. */
  get list() {
    return [...this.#active.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}
