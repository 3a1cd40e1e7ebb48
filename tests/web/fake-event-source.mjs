// A stand-in for the browser's EventSource, for the page's unit tests: it records what was
// made and lets a test dispatch events as the browser would.

export class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static made = [];

  constructor(url) {
    this.url = url;
    this.readyState = FakeEventSource.CONNECTING;
    this.listeners = [];
    FakeEventSource.made.push(this);
  }

  addEventListener(type, listener) {
    this.listeners.push([type, listener]);
  }

  close() {
    this.readyState = FakeEventSource.CLOSED;
  }

  /** Dispatches as a browser does: to every listener of the event's type. */
  emit(type, data, lastEventId = "") {
    for (const [t, listener] of this.listeners) if (t === type) listener({ type, data, lastEventId });
  }

  listenerCount(type) {
    return this.listeners.filter(([t]) => t === type).length;
  }

  types() {
    return this.listeners.map(([t]) => t);
  }
}
