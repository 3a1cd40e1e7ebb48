// Gap and duplicate detection for one client.
//
// An event is a duplicate when its stream ID is not after the last one the
// client saw on that topic (it was delivered twice), or when its JSON data
// carries a sequence number `seq` already seen. A `seq` that jumps ahead is a
// gap. Sequences are told apart by topic and by the optional `run` field the
// page's flood adds, so two floods on one topic do not look like duplicates;
// without `run`, a `seq` of 0 or 1 on a new event starts a new sequence.

const MAX_RUNS = 256;
const MAX_SEEN = 10_000;
const PRUNE = 1_000;

export class DeliveryCheck {
  gaps = 0;
  missing = 0;
  dupes = 0;
  outOfOrder = 0;
  #runs = new Map();

  /** Returns null when all is well, or `{kind: 'dupe'|'gap'|'order', missing?}`. */
  observe({ topic, redelivered, seq, run }) {
    if (redelivered) {
      this.dupes += 1;
      return { kind: "dupe" };
    }
    if (seq === null) return null;
    const key = `${topic ?? ""}\n${run ?? ""}`;
    const known = this.#runs.get(key);
    if (!known || (run === null && seq <= 1 && seq < known.last)) {
      this.#start(key, seq);
      return null;
    }
    if (seq <= known.floor || known.seen.has(seq)) {
      this.dupes += 1;
      return { kind: "dupe" };
    }
    known.seen.add(seq);
    if (known.seen.size > MAX_SEEN) this.#prune(known);
    if (seq === known.last + 1) {
      known.last = seq;
      return null;
    }
    if (seq > known.last) {
      const missing = seq - known.last - 1;
      this.gaps += 1;
      this.missing += missing;
      known.last = seq;
      return { kind: "gap", missing };
    }
    // A late arrival fills part of an earlier gap.
    this.outOfOrder += 1;
    this.missing = Math.max(0, this.missing - 1);
    return { kind: "order" };
  }

  #start(key, seq) {
    this.#runs.delete(key);
    this.#runs.set(key, { last: seq, floor: -Infinity, seen: new Set([seq]) });
    if (this.#runs.size > MAX_RUNS) this.#runs.delete(this.#runs.keys().next().value);
  }

  #prune(known) {
    let removed = 0;
    for (const seq of known.seen) {
      if (removed++ >= PRUNE) break;
      known.seen.delete(seq);
      known.floor = Math.max(known.floor, seq);
    }
  }
}
