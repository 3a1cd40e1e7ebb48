// A Mercure subscriber: a HubClient whose stream is `/.well-known/mercure`.
//
// Everything else is the native client's: states, reconnecting (EventSource
// sends Last-Event-ID by itself), resuming after the last update's ID, the
// seq checks and the list of updates. What differs: a Mercure ID names an
// update, not a position in a topic, so the page cannot tell an update's topic
// nor how far behind the client is.

import { HubClient } from "./client.js";
import { subscribeUrl } from "./mercure.js";

export class MercureClient extends HubClient {
  /** exact, patterns: the matchers; token: a JWT sent in the query, "" for an anonymous subscriber. */
  constructor({ id, exact, patterns, token, types, onChange }) {
    super({ id, topics: [], types, onChange, onEvent: () => {}, newestId: () => null });
    this.name = `Mercure ${id}`;
    this.mode = "mercure";
    this.exact = [...new Set(exact)];
    this.patterns = [...new Set(patterns)];
    this.token = token;
    // The hub sends no stream-reset notice on Mercure streams: a publisher's update may have that type.
    this.resetType = null;
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
}
