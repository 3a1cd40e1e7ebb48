// Event IDs and resume cursors as the hub issues them (see hub/cursor.py).
// On one topic a cursor is the stream ID `<ms>-<seq>`; on several topics it is
// a composite: the largest ms in base 36, then per topic (sorted) how far
// behind that its position is, and its sequence number when not 0.
//
// Both parts of a stream ID are unsigned 64-bit integers (hub/events.py), held
// here as BigInts so that IDs beyond 2^53 still compare exactly.

const STREAM_ID = /^([0-9]{1,20})-([0-9]{1,20})$/;
const BASE36 = /^[0-9a-z]{1,14}$/;
export const ID_PART_MAX = 2n ** 64n - 1n;
export const MAX_CURSOR_LENGTH = 4096;

/** `'1700000000000-3'` -> `[1700000000000n, 3n]`, or null. */
export function parseId(text) {
  const match = STREAM_ID.exec(text ?? "");
  if (!match) return null;
  const id = [BigInt(match[1]), BigInt(match[2])];
  return id[0] <= ID_PART_MAX && id[1] <= ID_PART_MAX ? id : null;
}

export function formatId(id) {
  return `${id[0]}-${id[1]}`;
}

/** Stream IDs compare as (ms, seq) pairs of integers, never as strings: -1, 0 or 1. */
export function compareIds(a, b) {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  if (a[1] !== b[1]) return a[1] < b[1] ? -1 : 1;
  return 0;
}

/** Topics in the order a composite cursor lists them: sorted, each once. */
export function canonicalTopics(topics) {
  return [...new Set(topics)].sort();
}

function int36(text) {
  if (!BASE36.test(text)) throw new RangeError(text);
  let value = 0n;
  for (const digit of text) value = value * 36n + BigInt(parseInt(digit, 36));
  return value;
}

/** The position in each topic (canonical order) a cursor holds, or null when it is not one. */
export function decodeCursor(cursor, topicCount) {
  cursor ??= "";
  if (cursor.length > MAX_CURSOR_LENGTH) return null;
  if (topicCount === 1) {
    const id = parseId(cursor);
    return id ? [id] : null;
  }
  const parts = cursor.split(".");
  if (parts.length !== topicCount + 1) return null;
  try {
    const base = int36(parts[0]);
    return parts.slice(1).map((part) => {
      // Split at the first "-" only, as Python's str.partition does.
      const dash = part.indexOf("-");
      const delta = dash < 0 ? part : part.slice(0, dash);
      const seq = dash < 0 ? "" : part.slice(dash + 1);
      const ms = base - int36(delta);
      const sequence = seq ? int36(seq) : 0n;
      if (ms < 0n || ms > ID_PART_MAX || sequence > ID_PART_MAX) throw new RangeError(part);
      return [ms, sequence];
    });
  } catch {
    return null;
  }
}
