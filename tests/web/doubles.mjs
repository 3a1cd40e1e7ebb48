// Stand-ins the page's unit tests share: storage in memory, and cursors as the hub makes them.

/** A composite cursor as hub/cursor.py encodes it; positions are [ms, seq] numbers. */
export function composite(positions) {
  const base = Math.max(...positions.map(([ms]) => ms));
  return [base.toString(36), ...positions.map(([ms, seq]) => (base - ms).toString(36) + (seq ? `-${seq.toString(36)}` : ""))].join(".");
}

/** The Storage methods the page uses (localStorage, sessionStorage), in memory. */
export class MemoryStorage {
  items = new Map();
  getItem(key) {
    return this.items.get(key) ?? null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
  removeItem(key) {
    this.items.delete(key);
  }
}
