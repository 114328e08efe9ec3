// Other participants' selections, kept right while everyone types (docs/PROTOCOL.md, "Presence").
//
// Pure bookkeeping, the same rule as the Rust client's `RemoteSelections` (libs/client/src/presence.rs):
//
// - each selection is kept in the text of the last version applied (the client's server version), moved
//   through every version after the one its frame named with transformIndex (an insert at the position
//   pushes it right, a delete over it pulls it to the start);
// - a frame naming a version not applied yet waits until it is (meanwhile the newest one whose version
//   has been applied is shown); a frame older than the kept history (HISTORY versions) shows no
//   selection until the next frame;
// - what is drawn is that selection moved through this client's own pending edits (the op in flight,
//   then the buffer), so it sits in the text the user sees;
// - this client's own caret is announced in the text of its server version: moved back through its
//   pending edits (`toServer`), a caret inside text not yet acknowledged going to where that text starts.

import { transformIndex } from './ot.js';

/** Versions of history kept to move selections named in older versions. */
export const HISTORY = 1000;

const move = (ops, [anchor, head]) => ops.reduce(([a, h], op) => [transformIndex(op, a), transformIndex(op, h)], [anchor, head]);

export class RemoteSelections {
  /** @param {number} version the version of the snapshot (or of the stored state) */
  constructor(version) {
    this.version = version;
    /** @type {Array<Array<number|string>>} ops of the versions up to `version`, newest last */
    this.history = [];
    /** @type {Map<string, {participant: object, selection: [number, number] | null, waiting: Array<{version: number, anchor: number, head: number}>}>} */
    this.others = new Map();
  }

  /** A snapshot replaced the text: selections cannot be moved into it and are dropped until announced again. */
  reset(version) {
    this.version = version;
    this.history = [];
    for (const entry of this.others.values()) {
      entry.selection = null;
      entry.waiting = entry.waiting.filter((w) => w.version >= version);
    }
    this.#release();
  }

  /**
   * The next version: another client's op as received, or this client's own op as committed (the op in
   * flight when its `ack` arrives). Versions come in order.
   */
  apply(version, op) {
    for (const entry of this.others.values()) {
      if (entry.selection) entry.selection = move([op], entry.selection);
    }
    this.version = version;
    this.history.push(op);
    if (this.history.length > HISTORY) this.history.shift();
    this.#release();
  }

  /**
   * A `presence` frame.
   * @param {{client: string, user: string, name?: string, colour?: string}} participant
   * @param {{version: number, anchor: number, head: number} | null} selection
   */
  update(participant, selection) {
    let entry = this.others.get(participant.client);
    if (!entry) {
      entry = { participant, selection: null, waiting: [] };
      this.others.set(participant.client, entry);
    }
    entry.participant = participant;
    if (!selection) {
      entry.selection = null;
      entry.waiting = [];
    } else if (selection.version > this.version) {
      // Frames of one participant come in version order: a later one of the same version replaces it.
      const last = entry.waiting[entry.waiting.length - 1];
      if (last && last.version >= selection.version) entry.waiting.pop();
      entry.waiting.push(selection);
      if (entry.waiting.length > HISTORY) entry.waiting.shift();
    } else {
      entry.waiting = [];
      entry.selection = this.#moved(selection);
    }
  }

  /** A `presence_left` frame. */
  remove(client) {
    this.others.delete(client);
  }

  /** Everyone leaves (the connection dropped: the server tells again who is here after reconnecting). */
  clear() {
    this.others.clear();
  }

  /**
   * Everyone else and where to draw them in the local text (the server version's text changed by
   * `pending`: the op in flight, then the buffer).
   * @param {Array<Array<number|string>>} pending
   * @returns {Array<{client: string, user: string, name?: string, colour?: string, anchor?: number, head?: number}>}
   */
  shown(pending) {
    return [...this.others.values()].map(({ participant, selection }) => {
      if (!selection) return { ...participant };
      const [anchor, head] = move(pending, selection);
      return { ...participant, anchor, head };
    });
  }

  /**
   * This client's caret, `index` in the local text, in the text of the server version: moved back through
   * `pending` (newest first).
   * @param {number} index
   * @param {Array<Array<number|string>>} pending
   */
  static toServer(index, pending) {
    return pending.reduceRight((i, op) => back(op, i), index);
  }

  #moved(s) {
    const behind = this.version - s.version;
    if (behind > this.history.length) return null;
    return move(this.history.slice(this.history.length - behind), [s.anchor, s.head]);
  }

  #release() {
    for (const entry of this.others.values()) {
      let newest = null;
      while (entry.waiting.length > 0 && entry.waiting[0].version <= this.version) newest = entry.waiting.shift();
      if (newest) entry.selection = this.#moved(newest);
    }
  }
}

/** Where `index` in the text `op` produces was in the text it applied to. */
function back(op, index) {
  let base = 0;
  let target = 0;
  for (const c of op) {
    if (typeof c === 'string') {
      const n = Array.from(c).length;
      if (index <= target + n) return base;
      target += n;
    } else if (c > 0) {
      if (index < target + c) return base + (index - target);
      base += c;
      target += c;
    } else if (c < 0) {
      base -= c;
    }
  }
  return base;
}
