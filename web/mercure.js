// The Mercure protocol as the page speaks it: subscription URLs, update forms,
// and the few rules the page checks before the hub does (hub/mercure/).
// Pure functions: no DOM, no network.

/** Relative to the page, which the gateway serves at its root. */
export const MERCURE_PATH = ".well-known/mercure";
export const SUBSCRIPTIONS_PATH = "/.well-known/mercure/subscriptions";
/** Every subscription event: a URL pattern the hub resolves against its public URL, as it does the events' topics. */
export const SUBSCRIPTIONS_PATTERN = `${SUBSCRIPTIONS_PATH}/*`;
export const WILDCARD = "*";
/** The hub's own event type (hub/mercure/publish.py); a publisher may not use it. */
const RESERVED_TYPE = "mercure";
// What hub/mercure/matchers.py's check_topic refuses: C0 and C1 controls, DEL.
const CONTROL = /[\x00-\x1f\x7f-\x9f]/u;
const MAX_BYTES = 1024;
const bytes = (text) => new TextEncoder().encode(text).length;

/**
 * Topics and matchers are IRIs, and an IRI may hold a comma: the page splits
 * them on white space only.
 */
export function iris(text) {
  return text.split(/\s+/).filter(Boolean);
}

/** Why the hub would refuse `text` as a topic or a matcher, or "". */
export function matcherProblem(text) {
  if (!text) return "a topic cannot be empty";
  if (CONTROL.test(text)) return "a topic cannot hold control characters";
  if (bytes(text) > MAX_BYTES) return `a topic is at most ${MAX_BYTES} bytes`;
  return "";
}

/** Why the hub would refuse `topic` as an update's topic, or "". */
export function topicProblem(topic) {
  if (topic === WILDCARD) return "* matches every topic: it cannot be an update's topic";
  // The hub checks the namespace after resolving the topic; this catches the usual spelling.
  if (/^\/?\.well-known\/mercure(\/|$)/.test(topic)) return "topics under /.well-known/mercure are the hub's own";
  return matcherProblem(topic);
}

/** Why the hub would refuse an update's type, or "" ("" is the default, `message`). */
export function typeProblem(type) {
  if (type === RESERVED_TYPE) return "the type mercure is the hub's own";
  if (/[\r\n]/.test(type)) return "the type may not hold a line break";
  if (bytes(type) > MAX_BYTES) return `the type is at most ${MAX_BYTES} bytes`;
  return "";
}

/** Why the hub would refuse a publisher's own update ID, or "" ("" lets the hub name it). */
export function idProblem(id) {
  if (id.startsWith("#")) return "an id may not start with #: those are the hub's own";
  if (/[\r\n\0]/.test(id)) return "an id may not hold a line break or NUL";
  if (bytes(id) > MAX_BYTES) return `an id is at most ${MAX_BYTES} bytes`;
  return "";
}

/**
 * The query of a subscription: `match=` for exact topics, `matchURLPattern=`
 * for URL patterns (`*` alone, of either kind, is the wildcard), the token as
 * `authorization` (EventSource cannot send headers), and `lastEventID` to
 * resume a first connection (the browser sends Last-Event-ID on its own reconnections).
 */
export function subscribeQuery({ exact = [], patterns = [], token = "", lastEventId = "" }) {
  const params = new URLSearchParams();
  for (const topic of exact) params.append("match", topic);
  for (const pattern of patterns) params.append(pattern === WILDCARD ? "match" : "matchURLPattern", pattern);
  if (token) params.set("authorization", token);
  if (lastEventId) params.set("lastEventID", lastEventId);
  return params;
}

export function subscribeUrl(options) {
  return `${MERCURE_PATH}?${subscribeQuery(options)}`;
}

/** An update as the form-encoded body the hub reads: only the fields that are set. */
export function updateBody({ topics, data = "", private: isPrivate = false, id = "", type = "", retry = "" }) {
  const body = new URLSearchParams();
  for (const topic of topics) body.append("topic", topic);
  body.set("data", data);
  // The hub reads the field's presence, whatever its value.
  if (isPrivate) body.set("private", "on");
  if (id) body.set("id", id);
  if (type) body.set("type", type);
  if (retry !== "" && retry !== null && retry !== undefined) body.set("retry", String(retry));
  return body;
}
