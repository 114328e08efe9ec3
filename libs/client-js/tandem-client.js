// Tandem client for browsers and Node: the client state machine of PROTOCOL.md and a WebSocket
// connection manager with reconnect and resubmission. Dependency-free ES module.
//
// Import it in a browser with `import { TandemClient } from '/tandem-client.js'` (it loads `./ot.js`
// next to itself), in Node 20 with `--experimental-websocket` or by passing a WebSocket constructor.

import { apply, compose, fromDiff, invert, transform, transformIndex, isNoop, normalize, UndoHistory } from './ot.js';
import { OfflineStore } from './offline.js';
import { RemoteSelections } from './presence.js';

export * from './ot.js';
export { OfflineStore, MemoryStorage } from './offline.js';
export { RemoteSelections } from './presence.js';

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * Error thrown by DocumentState when the server's messages break the protocol's ordering promises (a
 * version gap, an ack for an op that is not in flight). `code` is `version_gap` or `unexpected_ack`;
 * the connection manager answers it by reloading the document.
 */
export class ProtocolViolation extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'ProtocolViolation';
    this.code = code;
  }
}

/**
 * The client side of one document, as a pure state machine without I/O (the ot.js client model), so it
 * can be tested without a server and reused by any transport.
 *
 * States: synced (nothing pending); awaiting ack (one op in flight); awaiting with buffer (one op in flight,
 * later local edits composed into `buffer`). `text` is always the local view: the server text at `version`
 * with the in-flight op and the buffer applied.
 *
 * Undo and redo (`undo`, `redo`) revert this client's own edits only, with ot.js `UndoManager`
 * semantics: see `UndoHistory` in ot.js and "Undo and redo" in README.md.
 */
export class DocumentState {
  /**
   * @param {string} doc document id
   * @param {{text?: string, version?: number, nextSeq?: number, undo?: {depth?: number, windowMs?: number}}} [init]
   *   the snapshot, the next seq to use (seq is per client and document and must continue where this
   *   client left off), and the limits of the undo history (default 500 steps, 1000 ms; depth 0 keeps none)
   */
  constructor(doc, { text = '', version = 0, nextSeq = 1, undo } = {}) {
    this.doc = doc;
    this.text = text;
    this.version = version;
    this.nextSeq = nextSeq;
    /** @type {{seq: number, base: number, sent: Array<number|string>, op: Array<number|string>} | null}
     * `sent` is the op exactly as sent (what a resubmission must repeat); `op` is it transformed
     * against every remote op received since (what later remote ops are transformed against). */
    this.inflight = null;
    /** @type {Array<number|string> | null} local edits made while an op is in flight */
    this.buffer = null;
    /** True between discardPending() and the fresh snapshot given to reset(). */
    this.resyncing = false;
    /** Inverses of this client's own edits (see UndoHistory in ot.js). */
    this.history = new UndoHistory(undo);
    /** How many local edits the in-flight op and the buffer carry (for "3 edits waiting"). */
    this.inflightEdits = 0;
    this.bufferEdits = 0;
  }

  /** Local edits not yet acknowledged: in flight or buffered. */
  get pendingEdits() {
    return this.inflightEdits + this.bufferEdits;
  }

  /**
   * Everything needed to carry on after a reload: the server text and version are not kept apart,
   * only the local text, which is the server text with `inflight.op` and `buffer` applied, so the
   * three always fit together whenever they are written. The undo history is not kept.
   */
  toJSON() {
    const inflight = this.inflight && {
      seq: this.inflight.seq,
      base: this.inflight.base,
      sent: this.inflight.sent,
      op: this.inflight.op,
    };
    return {
      doc: this.doc,
      text: this.text,
      version: this.version,
      nextSeq: this.nextSeq,
      inflight,
      buffer: this.buffer,
      inflightEdits: this.inflightEdits,
      bufferEdits: this.bufferEdits,
      resyncing: this.resyncing,
    };
  }

  /**
   * A state written by toJSON, or null when `saved` is not one (then the caller starts from a
   * snapshot). A state that was waiting for a fresh snapshot (`resyncing`) comes back as that.
   * @param {object} saved
   * @param {{depth?: number, windowMs?: number}} [undo]
   */
  static fromJSON(saved, undo) {
    const count = (n, min) => Number.isSafeInteger(n) && n >= min;
    const isOp = (op) => Array.isArray(op) && op.every((c) => typeof c === 'string' || Number.isSafeInteger(c));
    const f = saved;
    if (!f || typeof f.doc !== 'string' || typeof f.text !== 'string' || !count(f.version, 0) || !count(f.nextSeq, 1)) {
      return null;
    }
    const inflight = f.inflight;
    if (inflight !== null && !(count(inflight?.seq, 1) && count(inflight.base, 0) && isOp(inflight.sent) && isOp(inflight.op))) {
      return null;
    }
    if (f.buffer !== null && !isOp(f.buffer)) return null;
    if (f.buffer !== null && inflight === null) return null;
    const state = new DocumentState(f.doc, { text: f.text, version: f.version, nextSeq: f.nextSeq, undo });
    state.inflight = inflight && { seq: inflight.seq, base: inflight.base, sent: inflight.sent, op: inflight.op };
    state.buffer = f.buffer;
    state.inflightEdits = inflight ? Math.max(1, f.inflightEdits | 0) : 0;
    state.bufferEdits = f.buffer ? Math.max(1, f.bufferEdits | 0) : 0;
    state.resyncing = f.resyncing === true;
    return state;
  }

  /** True when every local edit is acknowledged. */
  get synced() {
    return this.inflight === null && this.buffer === null;
  }

  /** Which state of the machine this is: 'synced' | 'awaiting' | 'awaiting_with_buffer'. */
  get state() {
    if (!this.inflight) return 'synced';
    return this.buffer ? 'awaiting_with_buffer' : 'awaiting';
  }

  /**
   * Applies a local edit (an op on the current local text) and returns the `op` message to send, or null
   * when an op is already in flight (the edit waits, composed into the buffer: at most one op per document
   * may be unacknowledged). Throws (OtError) if the op does not fit the text, leaving the state unchanged.
   * The edit's inverse goes onto the undo stack; `at` (milliseconds, default Date.now()) decides whether it
   * joins the previous edit's undo step.
   * @param {Array<number|string>} op
   * @param {number} [at]
   * @returns {{type: 'op', doc: string, seq: number, base: number, op: Array<number|string>} | null}
   */
  localEdit(op, at = Date.now()) {
    const inverse = invert(this.text, op);
    const message = this.#submit(normalize(op));
    this.history.record(inverse, at);
    return message;
  }

  /**
   * Reverts this client's most recent undo step (an edit, or a typing run of them) as a new local edit,
   * sent (or buffered) like any other. Returns `{op, message}`: the op applied to `text` (to move a caret
   * with) and the `op` message to send or null; or null when there is nothing to undo.
   */
  undo() {
    const op = this.history.nextUndo();
    if (!op) return null;
    const inverse = invert(this.text, op);
    const message = this.#submit(op);
    this.history.undone(inverse);
    return { op, message };
  }

  /** Applies the most recently undone step again, like `undo`; null when there is nothing to redo. */
  redo() {
    const op = this.history.nextRedo();
    if (!op) return null;
    const inverse = invert(this.text, op);
    const message = this.#submit(op);
    this.history.redone(inverse);
    return { op, message };
  }

  /** True when `undo` has a step to revert. */
  canUndo() {
    return this.history.canUndo();
  }

  /** True when `redo` has a step to apply again (nothing was edited since the last undo). */
  canRedo() {
    return this.history.canRedo();
  }

  /** Makes the next local edit start a new undo step even if it continues the previous one. */
  breakUndoGroup() {
    this.history.breakGroup();
  }

  /** Applies a normalised op to the local text and queues it: a local edit without its undo history. */
  #submit(norm) {
    this.text = apply(this.text, norm);
    if (this.resyncing) return null;
    if (this.inflight) {
      this.buffer = this.buffer ? compose(this.buffer, norm) : norm;
      this.bufferEdits++;
      return null;
    }
    this.inflightEdits = 1;
    return this.#send(norm);
  }

  /**
   * Takes another client's op for `version` (it applies on version - 1), transforms the in-flight op and
   * the buffer over it (own pending first, so ties break as on the server), applies it to the local text
   * and returns the op as applied locally, for an editor to move its caret with transformIndex. The undo
   * and redo stacks are transformed against it.
   * @param {number} version
   * @param {Array<number|string>} op
   * @returns {Array<number|string>}
   */
  onRemoteOp(version, op) {
    if (version !== this.version + 1) {
      throw new ProtocolViolation('version_gap', `${this.doc}: got version ${version} after ${this.version}`);
    }
    let received = op;
    let inflight = null;
    let buffer = null;
    if (this.inflight) {
      [inflight, received] = transform(this.inflight.op, received);
    }
    if (this.buffer) {
      [buffer, received] = transform(this.buffer, received);
    }
    const history = this.history.transformed(received);
    const text = apply(this.text, received);
    // Commit only after everything succeeded.
    if (this.inflight) this.inflight.op = inflight;
    if (this.buffer) this.buffer = buffer;
    this.history = history;
    this.text = text;
    this.version = version;
    return received;
  }

  /**
   * Takes the ack of the in-flight op (committed as `version`) and returns the next `op` message to send
   * (the buffer, with the next seq and base = the new version), or null when nothing is pending.
   * @param {number} seq
   * @param {number} version
   */
  onAck(seq, version) {
    if (!this.inflight || this.inflight.seq !== seq) {
      throw new ProtocolViolation(
        'unexpected_ack',
        `${this.doc}: ack for seq ${seq}, but ${this.inflight ? `seq ${this.inflight.seq}` : 'no op'} is in flight`,
      );
    }
    if (version !== this.version + 1) {
      throw new ProtocolViolation('version_gap', `${this.doc}: got ack for version ${version} after ${this.version}`);
    }
    this.version = version;
    this.inflight = null;
    this.inflightEdits = this.bufferEdits;
    this.bufferEdits = 0;
    if (!this.buffer) return null;
    const op = this.buffer;
    this.buffer = null;
    return this.#send(op);
  }

  /**
   * The in-flight op's message again, with the same seq, base and op as first sent, for after a reconnect
   * when the catch-up did not acknowledge it (the server applies it at most once). Null if none.
   */
  resendMessage() {
    if (!this.inflight) return null;
    const { seq, base, sent } = this.inflight;
    return { type: 'op', doc: this.doc, seq, base, op: sent };
  }

  /**
   * Drops the in-flight op and the buffer after `invalid_op` (the server rejected the op, its seq is used
   * up) or any other reason to reload the document. Until the fresh snapshot comes in through `reset`,
   * further local edits still change `text` (so an editor stays consistent) but are not queued and take
   * no seq: the snapshot will replace them anyway, and a seq taken but never sent would leave a gap.
   */
  discardPending() {
    this.inflight = null;
    this.buffer = null;
    this.inflightEdits = 0;
    this.bufferEdits = 0;
    this.resyncing = true;
  }

  /**
   * Replaces the text and version with a fresh snapshot, dropping anything pending. nextSeq is kept: seq
   * continues across everything for this client and document. The undo history is cleared: its steps
   * were made for the text the snapshot replaced.
   * @param {string} text
   * @param {number} version
   */
  reset(text, version) {
    this.inflight = null;
    this.buffer = null;
    this.inflightEdits = 0;
    this.bufferEdits = 0;
    this.resyncing = false;
    this.history.clear();
    this.text = text;
    this.version = version;
  }

  #send(op) {
    const seq = this.nextSeq++;
    this.inflight = { seq, base: this.version, sent: op, op };
    return { type: 'op', doc: this.doc, seq, base: this.version, op };
  }
}

// ---------------------------------------------------------------------------------------------------
// Helpers for editors that use UTF-16 indices (DOM selectionStart / selectionEnd).

/**
 * Converts a UTF-16 index of `text` (what DOM selection APIs give) to a code point index (what ops use).
 * @param {string} text
 * @param {number} index
 */
export function utf16ToCodePoint(text, index) {
  let cp = 0;
  let i = 0;
  for (const ch of text) {
    if (i >= index) break;
    i += ch.length;
    cp++;
  }
  return cp;
}

/**
 * Converts a code point index of `text` to a UTF-16 index, to put a transformed caret back into the DOM.
 * @param {string} text
 * @param {number} index
 */
export function codePointToUtf16(text, index) {
  let cp = 0;
  let i = 0;
  for (const ch of text) {
    if (cp >= index) break;
    i += ch.length;
    cp++;
  }
  return i;
}

/** A random client id of 16 characters of [A-Za-z0-9], unique to one editing session. */
export function randomClientId() {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  let id = '';
  for (const b of bytes) id += alphabet[b % alphabet.length];
  return id;
}

// ---------------------------------------------------------------------------------------------------
// Connection manager.

const OPEN = 1; // WebSocket.OPEN
const DOC_ID = /^[A-Za-z0-9._~/-]{1,256}$/;
const CLIENT_ID = /^[A-Za-z0-9._~-]{1,64}$/;

/**
 * One open document of a TandemClient. Read `text` and `version`; call `edit(op)` or `replaceText(text)`
 * for local changes. Remote changes arrive through the `onChange` callback given to `TandemClient#open`.
 */
export class DocHandle {
  /** @param {TandemClient} client @param {string} doc @param {object} callbacks */
  constructor(client, doc, callbacks) {
    this.client = client;
    this.doc = doc;
    this.callbacks = callbacks;
    /** @type {DocumentState | null} null until the first snapshot */
    this.state = null;
    /** 'opening' (fresh snapshot wanted) | 'catching_up' (open with since sent) | 'ready' | 'offline' | 'failed' | 'closed' */
    this.phase = 'opening';
    /** Whether the next open must ask for a fresh snapshot (first open, or after invalid_op). */
    this.fresh = true;
    this.status = 'connecting';
    this.lastError = null;
    this.waiters = [];
    this.retryTimer = null;
    /** Other participants' selections (see presence.js); null until the first snapshot. */
    this.remote = null;
    /** This client's own selection in `text` (code points), or null; see setSelection. */
    this.selection = null;
    /** Display fields sent with the selection ({name, colour}). */
    this.display = {};
    /** Whether this client takes part in presence: set by setSelection or an onPresence callback. */
    this.presenceWanted = typeof callbacks.onPresence === 'function';
    /** Resolves with the handle once the first snapshot is in. */
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {});
  }

  /** The local text (server text plus pending local edits), or '' before the first snapshot. */
  get text() {
    return this.state ? this.state.text : '';
  }

  /** The last server version this client has, or 0 before the first snapshot. */
  get version() {
    return this.state ? this.state.version : 0;
  }

  /** Local edits not yet acknowledged (kept across a reload when the client has `storage`). */
  get pendingEdits() {
    return this.state ? this.state.pendingEdits : 0;
  }

  /** True when the document is loaded, online and every local edit is acknowledged. */
  get synced() {
    return this.phase === 'ready' && this.state !== null && this.state.synced;
  }

  /**
   * Applies a local edit (an op on `text`, wire form) and sends it when possible. Edits made offline are
   * kept and sent after reconnecting. Throws before the first snapshot or if the op does not fit the text.
   * @param {Array<number|string>} op
   */
  edit(op) {
    if (this.phase === 'closed') throw new Error(`document ${this.doc} is closed`);
    if (!this.state) throw new Error(`document ${this.doc} is not loaded yet; wait for handle.ready`);
    const msg = this.state.localEdit(op);
    this.client._persist(this);
    if (msg && this.phase === 'ready') this.client._send(msg);
    this._moved(normalize(op));
  }

  /**
   * Replaces the whole local text with `newText` by sending the diff: the simplest way to plug in an
   * editor that only reports its new value. `cursor` (code points, optional) places ambiguous edits.
   * @param {string} newText
   * @param {number} [cursor]
   */
  replaceText(newText, cursor) {
    if (!this.state) throw new Error(`document ${this.doc} is not loaded yet; wait for handle.ready`);
    const op = fromDiff(this.state.text, newText, cursor);
    if (!isNoop(op)) this.edit(op);
  }

  /**
   * Reverts this client's most recent undo step as a new local edit, sent like any other (see "Undo and
   * redo" in README.md). Returns the op applied to `text`, to move a caret with, or null when there is
   * nothing to undo (or the document is not loaded yet).
   * @returns {Array<number|string> | null}
   */
  undo() {
    return this._historyEdit('undo');
  }

  /** Applies the most recently undone step again, like `undo`; null when there is nothing to redo. */
  redo() {
    return this._historyEdit('redo');
  }

  /** True when `undo` has a step to revert. */
  canUndo() {
    return this.state !== null && this.state.canUndo();
  }

  /** True when `redo` has a step to apply again. */
  canRedo() {
    return this.state !== null && this.state.canRedo();
  }

  /** Makes the next edit start a new undo step (a word boundary, a paste, a moved caret: the editor decides). */
  breakUndoGroup() {
    this.state?.breakUndoGroup();
  }

  /**
   * Resolves once the document is online and every local edit is acknowledged: handy for tests and for
   * "all changes saved" indicators.
   * @returns {Promise<void>}
   */
  whenSynced() {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Unsubscribes. Unacknowledged edits are dropped. */
  close() {
    this.client._closeDoc(this);
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.callbacks.onStatus?.(status);
  }

  _historyEdit(kind) {
    if (this.phase === 'closed') throw new Error(`document ${this.doc} is closed`);
    if (!this.state) return null;
    const done = kind === 'undo' ? this.state.undo() : this.state.redo();
    if (!done) return null;
    this.client._persist(this);
    if (done.message && this.phase === 'ready') this.client._send(done.message);
    this._moved(done.op);
    return done.op;
  }

  /**
   * Tells the other participants where this client's selection is: `anchor` (where it started) and
   * `head` (the caret), code points in `text`, or `null` to be present without a selection. `display`
   * (`{name, colour}`, a CSS hex colour) is shown with it; omitted fields keep their last value. Moves
   * faster than the server's limit (20 a second by default) are coalesced by the server, the latest
   * winning. Sent now when online, and again after every reconnect.
   * @param {number | null} anchor
   * @param {number} [head]
   * @param {{name?: string, colour?: string}} [display]
   */
  setSelection(anchor, head = anchor, display = {}) {
    if (this.phase === 'closed') throw new Error(`document ${this.doc} is closed`);
    if (anchor === null) {
      this.selection = null;
    } else {
      const len = Array.from(this.text).length;
      for (const [field, value] of [['anchor', anchor], ['head', head]]) {
        if (!Number.isSafeInteger(value) || value < 0 || value > len) {
          throw new Error(`${field} ${value} is outside the text (0 to ${len} code points)`);
        }
      }
      this.selection = { anchor, head };
    }
    this.display = { ...this.display, ...display };
    this.presenceWanted = true;
    this._announce();
  }

  /**
   * The other participants and where their selections are in `text` (code points; `anchor` and `head`
   * absent for one without a selection): each remote selection moved through every version applied
   * since it was announced and through this client's own pending edits, so it stays on its characters.
   * @returns {Array<{client: string, user: string, name?: string, colour?: string, anchor?: number, head?: number}>}
   */
  presences() {
    if (!this.remote || !this.state) return [];
    return this.remote.shown(this._pending());
  }

  _pending() {
    return [this.state?.inflight?.op, this.state?.buffer].filter(Boolean);
  }

  /** Sends this client's presence (online and loaded only; the server validates it in `version`'s text). */
  _announce() {
    if (!this.presenceWanted || !this.state || this.phase !== 'ready') return;
    const msg = { type: 'presence', doc: this.doc };
    if (this.selection) {
      const pending = this._pending();
      msg.version = this.state.version;
      msg.anchor = RemoteSelections.toServer(this.selection.anchor, pending);
      msg.head = RemoteSelections.toServer(this.selection.head, pending);
    }
    if (this.display.name) msg.name = this.display.name;
    if (this.display.colour) msg.colour = this.display.colour;
    this.client._send(msg);
  }

  /** The local text changed by `op` (an edit here or a remote op): move the own selection, redraw others. */
  _moved(op) {
    if (this.selection) {
      this.selection = { anchor: transformIndex(op, this.selection.anchor), head: transformIndex(op, this.selection.head) };
    }
    this._presenceChanged();
  }

  _presenceChanged() {
    if (this.remote && this.remote.others.size > 0) this.callbacks.onPresence?.(this.presences());
  }

  _checkWaiters() {
    if (!this.synced || this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/**
 * Connection to a Tandem gateway: one WebSocket shared by any number of open documents, with `hello`,
 * reconnect (exponential backoff, capped, with jitter), catch-up with `since`, resubmission of the
 * in-flight op with its original seq and base, and recovery from `invalid_op` by reloading the document.
 */
export class TandemClient {
  /**
   * @param {string} url WebSocket URL, e.g. `wss://host/v1/ws`
   * @param {object} [options]
   * @param {string} [options.clientId] session id (1-64 of [A-Za-z0-9._~-]); default 16 random alphanumerics.
   *   Stays the same across reconnects of this object, which is what makes resubmission safe.
   * @param {Function} [options.WebSocket] WebSocket constructor; default globalThis.WebSocket
   * @param {string | (() => string)} [options.token] bearer token (or a function returning a fresh one),
   *   sent as the subprotocols `tandem.v1` + `tandem.bearer.<token>`, which works in browsers too
   * @param {number} [options.pingIntervalMs] ping period; a ping unanswered for a whole period drops the
   *   connection. Default 20000; 0 disables.
   * @param {number} [options.initialBackoffMs] first reconnect delay (default 250)
   * @param {number} [options.maxBackoffMs] reconnect delay cap (default 10000)
   * @param {(status: string) => void} [options.onStatus] 'connecting' | 'online' | 'offline'
   * @param {(error: object) => void} [options.onError] errors not tied to a document
   * @param {{depth?: number, windowMs?: number}} [options.undo] limits of each document's undo history
   *   (default 500 steps and 1000 ms between the edits of one typing run; depth 0 keeps none)
   * @param {{getItem: Function, setItem: Function, removeItem: Function}} [options.storage] keeps the
   *   session and each open document's state (pending edits included) across reloads, e.g.
   *   `localStorage` (see offline.js). Without `clientId`, the session id is taken over from a stored
   *   session no other tab holds, so its pending edits go out with their original seq and base; the
   *   connection starts once that is settled (`client.session` resolves with the id).
   * @param {string} [options.storageScope] separates the sessions of different servers in one storage
   *   (default: the URL)
   * @param {{request: Function}} [options.locks] the Web Locks API (default `navigator.locks`)
   */
  constructor(url, options = {}) {
    this.url = url;
    if (options.clientId !== undefined && (typeof options.clientId !== 'string' || !CLIENT_ID.test(options.clientId))) {
      throw new Error(`bad client id ${JSON.stringify(options.clientId)}: 1 to 64 characters of [A-Za-z0-9._~-]`);
    }
    /** @type {OfflineStore | null} */
    this.offline = options.storage ? new OfflineStore(options.storage, options.storageScope ?? url, options.locks) : null;
    /** null until the session is settled (a client with storage and no clientId claims one first). */
    this.clientId = options.clientId ?? (this.offline ? null : randomClientId());
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new Error('no WebSocket constructor: pass { WebSocket } (Node 20 needs --experimental-websocket)');
    }
    this.token = options.token;
    this.pingIntervalMs = options.pingIntervalMs ?? 20000;
    this.initialBackoffMs = options.initialBackoffMs ?? 250;
    this.maxBackoffMs = options.maxBackoffMs ?? 10000;
    this.onStatus = options.onStatus;
    this.onError = options.onError;
    this.undoOptions = options.undo;
    /** @type {Map<string, DocHandle>} */
    this.docs = new Map();
    /** Next seq per document, kept when a document is closed: seq is per client and document. */
    this.nextSeqs = new Map();
    this.status = 'connecting';
    this.user = null;
    /** The id other clients see as `client` on this client's ops (its id scoped by its user), from `welcome`. */
    this.author = null;
    this.closed = false;
    this.attempt = 0;
    this.ws = null;
    this.welcomed = false;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.awaitingPong = false;
    /** Resolves with the session (client) id once it is settled. */
    this.session = this.clientId
      ? Promise.resolve(this.clientId)
      : this.offline.claimSession(randomClientId).then((id) => {
          this.clientId = id;
          for (const handle of this.docs.values()) this._restore(handle);
          return id;
        });
    if (this.clientId) {
      this._connect();
    } else {
      this.session
        .then(() => this._connect())
        .catch((err) => this._reportError({ code: 'storage_failed', message: String(err?.message ?? err) }));
    }
  }

  /** The current WebSocket (for diagnostics and tests, e.g. to simulate a dropped connection). */
  get socket() {
    return this.ws;
  }

  /**
   * Opens (subscribes to) a document. The handle's `ready` promise resolves after the first snapshot.
   * @param {string} doc document id
   * @param {object} [callbacks]
   * @param {(change: {op: Array<number|string>, text: string, version: number, client?: string, reset?: boolean}) => void} [callbacks.onChange]
   *   the text changed by something other than a local edit: a remote op (`op` is it as applied locally,
   *   so a caret can be moved with transformIndex), or a snapshot that replaced the text (`reset: true`,
   *   `op` is the diff from the old text)
   * @param {(ack: {seq: number, version: number}) => void} [callbacks.onAck]
   *   one of this client's own ops was committed as `version` (the text does not change, the version does)
   * @param {(status: string) => void} [callbacks.onStatus] 'connecting' | 'online' | 'offline'
   * @param {(error: {code: string, message: string, doc?: string, seq?: number}) => void} [callbacks.onError]
   * @param {(presences: Array<{client: string, user: string, name?: string, colour?: string, anchor?: number, head?: number}>) => void} [callbacks.onPresence]
   *   the other participants or their selections changed (`handle.presences()`, positions in `text`);
   *   giving it makes this client take part in presence (see `DocHandle#setSelection`)
   * @returns {DocHandle}
   */
  open(doc, callbacks = {}) {
    if (this.closed) throw new Error('client is closed');
    if (typeof doc !== 'string' || !DOC_ID.test(doc)) {
      throw new Error(`bad document id ${JSON.stringify(doc)}: 1 to 256 characters of [A-Za-z0-9._~/-]`);
    }
    if (this.docs.has(doc)) throw new Error(`document ${doc} is already open on this client`);
    const handle = new DocHandle(this, doc, callbacks);
    this.docs.set(doc, handle);
    if (this.clientId) this._restore(handle);
    if (this.welcomed) this._sendOpen(handle);
    return handle;
  }

  /**
   * Picks up a document's stored state (storage only): the text and pending edits are back at once,
   * offline too, and the next connection catches up from the stored version and resends the in-flight
   * op with its original seq and base.
   */
  _restore(handle) {
    if (!this.offline || handle.state) return;
    const saved = this.offline.load(this.clientId, handle.doc);
    if (!saved) return;
    const state = DocumentState.fromJSON(saved, this.undoOptions);
    if (!state) return;
    if (state.resyncing) {
      // It was waiting for a fresh snapshot: nothing pending to keep, only where seq goes on.
      this.nextSeqs.set(handle.doc, state.nextSeq);
      return;
    }
    handle.state = state;
    handle.remote = new RemoteSelections(state.version);
    handle.fresh = false;
    handle.phase = 'offline';
    handle._resolveReady(handle);
    handle.callbacks.onChange?.({ op: fromDiff('', state.text), text: state.text, version: state.version, reset: true });
  }

  /** Writes a document's state (storage only); a failed write is reported once per document. */
  _persist(handle) {
    if (!this.offline || !this.clientId || !handle.state) return;
    try {
      this.offline.save(this.clientId, handle.state.toJSON());
      handle.persistFailed = false;
    } catch (err) {
      if (handle.persistFailed) return;
      handle.persistFailed = true;
      this._reportError({ code: 'storage_failed', message: `edits of ${handle.doc} are not kept across a reload: ${err?.message ?? err}`, doc: handle.doc }, handle);
    }
  }

  /**
   * Hands the server a fresh token before the current one expires (the `auth` message of PROTOCOL.md);
   * later reconnects use it too. The server answers `authed`, or closes with 4401 if it refuses it.
   * @param {string} token
   */
  auth(token) {
    if (typeof token !== 'string' || token === '') throw new Error('auth needs a token');
    this.token = token;
    return this._send({ type: 'auth', token });
  }

  /** Closes every document and the connection, and stops reconnecting. */
  close() {
    if (this.closed) return;
    for (const handle of [...this.docs.values()]) this._closeDoc(handle);
    this.closed = true;
    this.offline?.release();
    clearTimeout(this.reconnectTimer);
    this._stopPing();
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    this._setStatus('offline');
  }

  // --- connection -----------------------------------------------------------------------------------

  _connect() {
    if (this.closed) return;
    this._setStatus('connecting');
    for (const h of this.docs.values()) if (h.phase !== 'failed') h._setStatus('connecting');
    let ws;
    try {
      const token = typeof this.token === 'function' ? this.token() : this.token;
      ws = token
        ? new this.WebSocket(this.url, ['tandem.v1', `tandem.bearer.${token}`])
        : new this.WebSocket(this.url);
    } catch (err) {
      this._reportError({ code: 'connect_failed', message: String(err?.message ?? err) });
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this._send({ type: 'hello', protocol: PROTOCOL_VERSION, client: this.clientId });
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(typeof event.data === 'string' ? event.data : String(event.data));
      } catch {
        this._reportError({ code: 'bad_frame', message: 'server sent a frame that is not JSON' });
        return;
      }
      this._onMessage(msg);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this._onDisconnect(event?.code);
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
  }

  /** Drops the current socket at once (dead connection, overloaded) and schedules a reconnect. */
  _drop() {
    const ws = this.ws;
    if (!ws) return;
    detach(ws);
    try {
      ws.close(4000);
    } catch {
      // ignore
    }
    this._onDisconnect();
  }

  _onDisconnect(code) {
    this.ws = null;
    this.welcomed = false;
    this._stopPing();
    for (const h of this.docs.values()) {
      clearTimeout(h.retryTimer);
      if (h.phase === 'ready' || h.phase === 'catching_up') h.phase = 'offline';
      if (h.phase !== 'failed') h._setStatus('offline');
      // Who is here is unknown until the server tells again, after the reconnect.
      if (h.remote && h.remote.others.size > 0) {
        h.remote.clear();
        h.callbacks.onPresence?.([]);
      }
    }
    this._setStatus('offline');
    if (this.closed) return;
    if (code === 1002 && this.stopReason) return; // unsupported protocol: retrying cannot help
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this.closed) return;
    clearTimeout(this.reconnectTimer);
    const cap = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** Math.min(this.attempt, 30));
    const delay = cap / 2 + (Math.random() * cap) / 2;
    this.attempt++;
    this.reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  _send(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    if (msg.type !== 'hello' && !this.welcomed) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  _sendOpen(handle) {
    // A handle that takes part in presence asks for the current presences with the open itself.
    const presence = handle.presenceWanted ? { presence: true } : {};
    if (handle.fresh || !handle.state) {
      handle.phase = 'opening';
      this._send({ type: 'open', doc: handle.doc, ...presence });
    } else {
      handle.phase = 'catching_up';
      this._send({ type: 'open', doc: handle.doc, since: handle.state.version, ...presence });
    }
    handle._setStatus('connecting');
  }

  _startPing() {
    this._stopPing();
    if (!this.pingIntervalMs) return;
    this.awaitingPong = false;
    this.pingTimer = setInterval(() => {
      if (this.awaitingPong) {
        this._drop();
        return;
      }
      this.awaitingPong = true;
      this._send({ type: 'ping' });
    }, this.pingIntervalMs);
    this.pingTimer.unref?.();
  }

  _stopPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.onStatus?.(status);
  }

  _reportError(err, handle) {
    if (handle) {
      handle.lastError = err;
      handle.callbacks.onError?.(err);
    } else {
      this.onError?.(err);
    }
  }

  _closeDoc(handle) {
    if (handle.phase === 'closed') return;
    clearTimeout(handle.retryTimer);
    if (handle.state) this.nextSeqs.set(handle.doc, handle.state.nextSeq);
    this._persist(handle);
    if (this.docs.get(handle.doc) === handle) this.docs.delete(handle.doc);
    handle.phase = 'closed';
    handle._rejectReady(new Error(`document ${handle.doc} was closed`));
    this._send({ type: 'close', doc: handle.doc });
  }

  /** After invalid_op or a broken promise of the protocol: drop pending edits, reload from a snapshot. */
  _resync(handle) {
    handle.state?.discardPending();
    this._persist(handle);
    handle.fresh = true;
    handle.phase = 'opening';
    if (this.welcomed) {
      this._send({ type: 'close', doc: handle.doc });
      this._send({ type: 'open', doc: handle.doc });
    }
    handle._setStatus('connecting');
  }

  // --- messages -------------------------------------------------------------------------------------

  _onMessage(msg) {
    switch (msg?.type) {
      case 'welcome':
        this.welcomed = true;
        this.attempt = 0;
        this.user = msg.user ?? null;
        this.author = msg.author ?? this.clientId; // a server without `author` shows the id as chosen
        this._setStatus('online');
        this._startPing();
        for (const h of this.docs.values()) if (h.phase !== 'failed') this._sendOpen(h);
        return;
      case 'pong':
        this.awaitingPong = false;
        return;
      case 'authed':
        this.user = msg.user ?? this.user;
        this.tokenExpires = msg.expires ?? null;
        return;
      case 'error':
        this._onError(msg);
        return;
      default:
        break;
    }
    const handle = typeof msg?.doc === 'string' ? this.docs.get(msg.doc) : undefined;
    if (!handle) return; // a document closed meanwhile, or an unknown message type: ignore
    try {
      switch (msg.type) {
        case 'snapshot':
          this._onSnapshot(handle, msg);
          break;
        case 'op':
          this._onOp(handle, msg);
          break;
        case 'ack':
          this._onAck(handle, msg);
          break;
        case 'opened':
          this._onOpened(handle, msg);
          break;
        case 'presence':
        case 'presence_left':
          this._onPresence(handle, msg);
          break;
        default:
          break;
      }
    } catch (err) {
      // The server broke an ordering promise or sent an op that does not fit: reload the document.
      this._reportError({ code: err?.code ?? 'client_error', message: String(err?.message ?? err), doc: handle.doc }, handle);
      this._resync(handle);
    }
    this._persist(handle);
    handle._checkWaiters();
  }

  _onSnapshot(handle, msg) {
    if (handle.phase === 'catching_up') {
      // A reopen further behind than the server's catch-up limit: the server answers with the whole
      // document instead of every version since (PROTOCOL.md, "Reconnect"), then `opened` at its
      // version. Start over from it as after invalid_op: unacknowledged edits are dropped, not resent,
      // and seq continues.
      const oldText = handle.text;
      handle.state.reset(msg.text, msg.version);
      handle.remote.reset(msg.version);
      handle._moved(fromDiff(oldText, msg.text));
      handle.callbacks.onChange?.({ op: fromDiff(oldText, msg.text), text: msg.text, version: msg.version, reset: true });
      return;
    }
    // Messages of an older subscription (before close + open) come before the snapshot: only a snapshot
    // for an open without `since` counts.
    if (handle.phase !== 'opening') return;
    const oldText = handle.text;
    if (handle.state) {
      handle.state.reset(msg.text, msg.version);
    } else {
      handle.state = new DocumentState(handle.doc, {
        text: msg.text,
        version: msg.version,
        nextSeq: this.nextSeqs.get(handle.doc) ?? 1,
        undo: this.undoOptions,
      });
    }
    if (handle.remote) handle.remote.reset(msg.version);
    else handle.remote = new RemoteSelections(msg.version);
    handle.fresh = false;
    handle.phase = 'ready';
    handle._setStatus('online');
    handle._resolveReady(handle);
    handle._moved(fromDiff(oldText, msg.text));
    handle.callbacks.onChange?.({
      op: fromDiff(oldText, msg.text),
      text: msg.text,
      version: msg.version,
      reset: true,
    });
    handle._announce();
  }

  _onOp(handle, msg) {
    if (handle.phase !== 'ready' && handle.phase !== 'catching_up') return;
    if (msg.version <= handle.state.version) return; // already have it
    const op = handle.state.onRemoteOp(msg.version, msg.op);
    handle.remote.apply(msg.version, msg.op);
    handle._moved(op);
    handle.callbacks.onChange?.({ op, text: handle.state.text, version: msg.version, client: msg.client });
  }

  _onAck(handle, msg) {
    if (handle.phase !== 'ready' && handle.phase !== 'catching_up') return;
    if (msg.version <= handle.state.version) return; // already have it
    // The op in flight, transformed past every version before it, is the version committed.
    const committed = handle.state.inflight?.op;
    const next = handle.state.onAck(msg.seq, msg.version);
    if (committed) handle.remote.apply(msg.version, committed);
    handle.callbacks.onAck?.({ seq: msg.seq, version: msg.version });
    // During catch-up the next op waits for `opened`, then goes out as the in-flight op.
    if (next && handle.phase === 'ready') this._send(next);
  }

  _onOpened(handle, msg) {
    if (handle.phase !== 'catching_up') return;
    if (msg.version !== handle.state.version) {
      throw new ProtocolViolation(
        'version_gap',
        `${handle.doc}: catch-up ended at version ${msg.version}, but this client has ${handle.state.version}`,
      );
    }
    handle.phase = 'ready';
    handle._setStatus('online');
    // Not acknowledged by the catch-up: resend with the same seq, base and op.
    const resend = handle.state.resendMessage();
    if (resend) this._send(resend);
    handle._announce();
  }

  _onPresence(handle, msg) {
    if (!handle.remote || typeof msg.client !== 'string' || msg.client === this.author) return;
    if (msg.type === 'presence_left') {
      if (!handle.remote.others.has(msg.client)) return;
      handle.remote.remove(msg.client);
      handle.callbacks.onPresence?.(handle.presences());
      return;
    }
    const participant = { client: msg.client, user: msg.user };
    if (typeof msg.name === 'string') participant.name = msg.name;
    if (typeof msg.colour === 'string') participant.colour = msg.colour;
    const selection = Number.isSafeInteger(msg.version) && Number.isSafeInteger(msg.anchor) && Number.isSafeInteger(msg.head)
      ? { version: msg.version, anchor: msg.anchor, head: msg.head }
      : null;
    handle.remote.update(participant, selection);
    handle.callbacks.onPresence?.(handle.presences());
  }

  _onError(msg) {
    const err = { code: msg.code, message: msg.message, doc: msg.doc, seq: msg.seq };
    const handle = typeof msg.doc === 'string' ? this.docs.get(msg.doc) : undefined;
    if (!handle) {
      if (msg.code === 'unsupported_protocol') this.stopReason = err;
      this._reportError(err);
      return;
    }
    this._reportError(err, handle);
    // A refused `presence` (a selection outside its version's text): nothing else to do.
    if (msg.presence === true) return;
    const inflight = handle.state?.inflight;
    const aboutInflight = msg.seq !== undefined && inflight && inflight.seq === msg.seq;
    switch (msg.code) {
      case 'invalid_op':
        // The op was dropped and its seq used up: discard pending edits and reload.
        this._resync(handle);
        break;
      case 'too_large':
        // An op (or the document it would make) over the limit is rejected like an invalid one and
        // its seq used up; on `open` (too many documents on the connection) the document fails.
        if (aboutInflight) this._resync(handle);
        else if (msg.seq === undefined && handle.phase === 'opening') this._fail(handle, err);
        break;
      case 'forbidden':
        if (msg.seq !== undefined) {
          // No write permission: the local edits can never be committed. The op never reached the
          // document, so its seq is not used up: the next op takes it again.
          if (aboutInflight) handle.state.nextSeq = inflight.seq;
          this._resync(handle);
        } else {
          this._fail(handle, err); // no read permission
        }
        break;
      case 'rate_limited':
      case 'unavailable':
        // The message was dropped: send it again later, unchanged.
        this._retryLater(handle, aboutInflight);
        break;
      case 'bad_request':
        // A `since` ahead of the document (the server lost history): start over from a snapshot. A
        // fresh open refused is not retried (it would be refused again).
        if (handle.phase === 'catching_up') this._resync(handle);
        else if (handle.phase === 'opening' && msg.seq === undefined) this._fail(handle, err);
        break;
      default:
        break;
    }
  }

  /** The document cannot be opened: stop trying, tell the page. */
  _fail(handle, err) {
    handle.phase = 'failed';
    handle._setStatus('offline');
    handle._rejectReady(Object.assign(new Error(err.message), { code: err.code }));
  }

  _retryLater(handle, aboutInflight) {
    clearTimeout(handle.retryTimer);
    const phase = handle.phase;
    handle.retryTimer = setTimeout(() => {
      if (!this.welcomed || this.docs.get(handle.doc) !== handle) return;
      if (aboutInflight && handle.phase === 'ready') {
        const msg = handle.state.resendMessage();
        if (msg) this._send(msg);
      } else if (!aboutInflight && handle.phase === phase && (phase === 'opening' || phase === 'catching_up')) {
        this._sendOpen(handle);
      }
    }, 500 + Math.random() * 500);
  }
}

function detach(ws) {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}
