// Offline edits that survive a reload: the client's session (its id) and each document's state (text,
// version, next seq, the op in flight and the buffered edits) kept in a localStorage-like storage, so a
// page closed or reloaded while offline sends its edits on the next load, once, with their original
// seq and base (the server applies a (client, seq) at most once, so resending them is always safe).
//
// Why localStorage and not IndexedDB: its writes are synchronous, so the state is on disk the moment
// an edit returns (a page closed right after typing loses nothing) and the state of one document is
// always written whole, never half. The cost is a copy of the document's text per write, which is
// fine for the documents a browser edits; pass any object with getItem / setItem / removeItem (a
// Map-backed one in Node) to choose another store.
//
// One session id per tab at a time. A reloaded tab takes over a stored session that no other tab
// holds (so it resends that session's pending edits under the same id and seq); a second tab gets a
// session of its own. "Holds" is a Web Lock (`navigator.locks`, held for the page's lifetime) where
// the platform has one; without it (Node), the first stored session is taken, so two processes must
// not share one storage.

/** Version of the stored layout. A stored state of another layout is ignored (not guessed at). */
export const STORAGE_LAYOUT = 1;

const CLIENT_ID = /^[A-Za-z0-9._~-]{1,64}$/;

/**
 * The sessions and document states of one server (`scope`) in a storage.
 * Keys: `tandem/<scope>/sessions` (the stored session ids, JSON array) and
 * `tandem/<scope>/<session>/<doc>` (one document's state, see DocumentState#toJSON).
 */
export class OfflineStore {
  /**
   * @param {{getItem(k: string): string | null, setItem(k: string, v: string): void, removeItem(k: string): void}} storage
   * @param {string} scope usually the server's URL: sessions of different servers never mix
   * @param {{request: Function} | undefined} [locks] the Web Locks API (`navigator.locks`); default the global one
   */
  constructor(storage, scope, locks = globalThis.navigator?.locks) {
    this.storage = storage;
    this.prefix = `tandem/${scope}/`;
    this.locks = locks;
    /** Resolves the lock of the session this store holds when the client closes. */
    this.releaseLock = null;
  }

  /**
   * The session id this page uses: a stored one no other tab holds, else `fresh()` (then stored). With
   * Web Locks, the chosen session's lock is held until `release()`.
   * @param {() => string} fresh makes a new session id
   * @returns {Promise<string>}
   */
  async claimSession(fresh) {
    const stored = this.#sessions();
    for (const id of stored) {
      if (await this.#lock(id)) return id;
    }
    let id = fresh();
    while (stored.includes(id)) id = fresh();
    this.#writeSessions([...stored, id]);
    await this.#lock(id);
    return id;
  }

  /** Lets another tab take the session (the client is closed). */
  release() {
    this.releaseLock?.();
    this.releaseLock = null;
  }

  /**
   * The stored state of `doc` in `session`, or null (none, unreadable, or another layout).
   * @returns {object | null}
   */
  load(session, doc) {
    const raw = this.storage.getItem(this.#docKey(session, doc));
    if (raw === null) return null;
    try {
      const state = JSON.parse(raw);
      return state?.layout === STORAGE_LAYOUT && state.doc === doc ? state : null;
    } catch {
      return null;
    }
  }

  /**
   * Writes a document's state whole. Throws what the storage throws (a full storage: QuotaExceededError),
   * so the caller can tell the user that edits are no longer kept.
   */
  save(session, state) {
    this.storage.setItem(this.#docKey(session, state.doc), JSON.stringify({ ...state, layout: STORAGE_LAYOUT }));
  }

  #docKey(session, doc) {
    return `${this.prefix}${session}/${doc}`;
  }

  #sessions() {
    try {
      const ids = JSON.parse(this.storage.getItem(`${this.prefix}sessions`) ?? '[]');
      return Array.isArray(ids) ? ids.filter((id) => typeof id === 'string' && CLIENT_ID.test(id)) : [];
    } catch {
      return [];
    }
  }

  #writeSessions(ids) {
    this.storage.setItem(`${this.prefix}sessions`, JSON.stringify(ids));
  }

  /** Takes the session's lock without waiting; true when this page now holds it (or there are no locks). */
  async #lock(id) {
    if (!this.locks) return true;
    let granted;
    const gotIt = new Promise((resolve) => {
      granted = resolve;
    });
    this.locks
      .request(`${this.prefix}${id}`, { ifAvailable: true }, (lock) => {
        if (!lock) {
          granted(false);
          return undefined;
        }
        granted(true);
        // Held until release(): the promise the callback returns keeps the lock.
        return new Promise((resolve) => {
          this.releaseLock = resolve;
        });
      })
      .catch(() => granted(false));
    return gotIt;
  }
}

/** A Map-backed storage with localStorage's interface, for Node and tests. */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
  removeItem(key) {
    this.map.delete(key);
  }
}
