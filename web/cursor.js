// Event IDs and resume cursors as the hub issues them (see hub/cursor.py).
// On one topic a cursor is the stream ID `<ms>-<seq>`; on several topics it is
// a composite: the largest ms in base 36, then per topic (sorted) how far
// behind that its position is, and its sequence number when not 0.

const STREAM_ID = /^(\d{1,20})-(\d{1,20})$/;
const BASE36 = /^[0-9a-z]{1,14}$/;

/** `'1700000000000-3'` -> `[1700000000000, 3]`, or null. */
export function parseId(text) {
  const match = STREAM_ID.exec(text ?? "");
  return match ? [Number(match[1]), Number(match[2])] : null;
}

export function formatId(id) {
  return `${id[0]}-${id[1]}`;
}

/** Stream IDs compare as (ms, seq) pairs of integers, never as strings. */
export function compareIds(a, b) {
  return a[0] - b[0] || a[1] - b[1];
}

/** Topics in the order a composite cursor lists them: sorted, each once. */
export function canonicalTopics(topics) {
  return [...new Set(topics)].sort();
}

function int36(text) {
  if (!BASE36.test(text)) throw new RangeError(text);
  return parseInt(text, 36);
}

/** The position in each topic (canonical order) a cursor holds, or null when it is not one. */
export function decodeCursor(cursor, topicCount) {
  if (topicCount === 1) {
    const id = parseId(cursor);
    return id ? [id] : null;
  }
  const parts = (cursor ?? "").split(".");
  if (parts.length !== topicCount + 1) return null;
  try {
    const base = int36(parts[0]);
    return parts.slice(1).map((part) => {
      const [delta, seq] = part.split("-", 2);
      const ms = base - int36(delta);
      if (ms < 0) throw new RangeError(part);
      return [ms, seq === undefined ? 0 : int36(seq)];
    });
  } catch {
    return null;
  }
}
