// The OT algebra of Tandem on plain text, in the wire form of PROTOCOL.md.
//
// An operation is a JSON array that walks the whole base text: a positive integer retains that many
// characters, a string inserts itself, a negative integer deletes that many characters. Characters are
// Unicode scalar values (code points), never UTF-16 code units, so every length here is counted with
// for..of / Array.from and never with String#length.
//
// The semantics are those of ot.js `TextOperation` (apply, compose, transform with "a's insert goes
// first" on ties, invert, transformIndex of ot.js's Selection), matching the Rust crate `libs/ot`; both
// are held to the shared vectors in `libs/ot/vectors/ot-vectors.json`. At the end, `UndoHistory`: the
// undo and redo stacks of ot.js's `UndoManager`, as the Rust client keeps them (`libs/client/src/undo.rs`).

/** Largest retain or delete count accepted, as in the Rust crate: larger counts can never fit a document. */
export const MAX_COUNT = 2 ** 40;

/**
 * The error thrown for every malformed or misfitting operation. `code` is machine-readable and matches
 * the Rust crate's error variants in snake case (`not_an_array`, `bad_component`, `count_out_of_range`,
 * `length_overflow`, `base_length_mismatch`, `compose_length_mismatch`, `transform_length_mismatch`).
 */
export class OtError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'OtError';
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------------
// Internal form: a list of components {k: 'r'|'i'|'d', n, c?} where `c` is the array of code points of an
// insert. Built only through Builder, which keeps the normal form of the Rust `Operation` builder.

const R = 'r';
const I = 'i';
const D = 'd';

/** Counts code points: the only length that means anything on the wire. */
function cpLength(s) {
  let n = 0;
  // eslint-disable-next-line no-unused-vars
  for (const _ of s) n++;
  return n;
}

/** Appends components while keeping the normal form, exactly like the Rust builder. */
class Builder {
  constructor() {
    /** @type {{k: string, n: number, c?: string[]}[]} */
    this.ops = [];
    this.base = 0;
    this.target = 0;
  }

  retain(n) {
    if (n === 0) return this;
    this.base += n;
    this.target += n;
    const last = this.ops[this.ops.length - 1];
    if (last && last.k === R) last.n += n;
    else this.ops.push({ k: R, n });
    return this;
  }

  /** @param {string[]} chars code points to insert */
  insert(chars) {
    if (chars.length === 0) return this;
    this.target += chars.length;
    const ops = this.ops;
    const last = ops[ops.length - 1];
    const prev = ops[ops.length - 2];
    if (last && last.k === I) {
      append(last, chars);
    } else if (last && last.k === D && prev && prev.k === I) {
      append(prev, chars);
    } else if (last && last.k === D) {
      ops.splice(ops.length - 1, 0, { k: I, n: chars.length, c: chars.slice() });
    } else {
      ops.push({ k: I, n: chars.length, c: chars.slice() });
    }
    return this;
  }

  delete(n) {
    if (n === 0) return this;
    this.base += n;
    const last = this.ops[this.ops.length - 1];
    if (last && last.k === D) last.n += n;
    else this.ops.push({ k: D, n });
    return this;
  }

  /** The wire form: retain n, insert "s", delete -n. */
  toWire() {
    return this.ops.map((o) => (o.k === R ? o.n : o.k === D ? -o.n : o.c.join('')));
  }
}

function append(insert, chars) {
  for (const ch of chars) insert.c.push(ch);
  insert.n += chars.length;
}

function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'boolean':
      return 'a boolean';
    case 'number':
      return Number.isInteger(value) ? 'a number' : 'a non-integer number';
    case 'string':
      return 'a string';
    case 'object':
      return 'an object';
    default:
      return typeof value;
  }
}

/**
 * Reads the wire form into a normalised Builder, with the same checks and error codes as the Rust
 * `Operation::from_json`, so a bad op is refused here before the server would refuse it.
 */
function parse(op) {
  if (!Array.isArray(op)) {
    throw new OtError(
      'not_an_array',
      'an operation must be a JSON array of retains (positive integers), inserts (strings) and deletes (negative integers)',
    );
  }
  const b = new Builder();
  let base = 0;
  let target = 0;
  for (let index = 0; index < op.length; index++) {
    const item = op[index];
    if (typeof item === 'string') {
      const chars = Array.from(item);
      target += chars.length;
      b.insert(chars);
    } else if (typeof item === 'number' && Number.isInteger(item)) {
      const count = Math.abs(item);
      if (count > MAX_COUNT) {
        throw new OtError(
          'count_out_of_range',
          `operation component ${index} has a count out of range (at most ${MAX_COUNT})`,
        );
      }
      base += count;
      if (item < 0) {
        b.delete(count);
      } else {
        target += count;
        b.retain(count);
      }
    } else {
      throw new OtError(
        'bad_component',
        `operation component ${index} is ${describe(item)}; expected a non-zero integer or a string`,
      );
    }
  }
  if (base > MAX_COUNT || target > MAX_COUNT) throw new OtError('length_overflow', 'operation lengths overflow');
  return b;
}

// ---------------------------------------------------------------------------------------------------
// Public API, all on the wire form.

/**
 * Checks an operation and returns its normal form (no zero-length component, same kinds merged, an
 * insert before an adjacent delete), the form the server sends, so ops can be compared with deepEqual.
 * @param {Array<number|string>} op
 * @returns {Array<number|string>}
 */
export function normalize(op) {
  return parse(op).toWire();
}

/**
 * Length in code points of the text the operation applies to (retains + deletes).
 * @param {Array<number|string>} op
 * @returns {number}
 */
export function baseLength(op) {
  return parse(op).base;
}

/**
 * Length in code points of the text the operation produces (retains + inserts).
 * @param {Array<number|string>} op
 * @returns {number}
 */
export function targetLength(op) {
  return parse(op).target;
}

/**
 * True when the operation changes nothing (only retains), so an editor need not send it.
 * @param {Array<number|string>} op
 */
export function isNoop(op) {
  return parse(op).ops.every((o) => o.k === R);
}

/**
 * Applies an operation to a text. Throws `base_length_mismatch` unless the op walks exactly the whole text,
 * which is how a client notices that its copy and the server's no longer agree.
 * @param {string} text
 * @param {Array<number|string>} op
 * @returns {string}
 */
export function apply(text, op) {
  const b = parse(op);
  const chars = Array.from(text);
  if (b.base !== chars.length) {
    throw new OtError(
      'base_length_mismatch',
      `operation expects a base text of ${b.base} characters, but the text has ${chars.length}`,
    );
  }
  const out = [];
  let pos = 0;
  for (const o of b.ops) {
    if (o.k === R) {
      for (let i = 0; i < o.n; i++) out.push(chars[pos + i]);
      pos += o.n;
    } else if (o.k === I) {
      for (const ch of o.c) out.push(ch);
    } else {
      pos += o.n;
    }
  }
  return out.join('');
}

/** Cursor over the components of an op that can take a part of the current component. */
class Walker {
  constructor(ops) {
    this.ops = ops;
    this.i = 0;
    this.off = 0; // how much of ops[i] is used up
  }

  /** The current component with only its unused part, or undefined at the end. */
  peek() {
    const o = this.ops[this.i];
    if (!o) return undefined;
    return { k: o.k, n: o.n - this.off };
  }

  /** Takes up to n (all if undefined) of the current component; inserts come back as code point arrays. */
  take(n) {
    const o = this.ops[this.i];
    const avail = o.n - this.off;
    const len = n === undefined ? avail : Math.min(n, avail);
    const part = { k: o.k, n: len };
    if (o.k === I) part.c = o.c.slice(this.off, this.off + len);
    this.off += len;
    if (this.off === o.n) {
      this.i++;
      this.off = 0;
    }
    return part;
  }
}

function push(b, part) {
  if (part.k === R) b.retain(part.n);
  else if (part.k === I) b.insert(part.c);
  else b.delete(part.n);
}

/**
 * Composes two consecutive operations into one with the same effect: apply(apply(t, a), b) equals
 * apply(t, compose(a, b)). The client uses it to fold later local edits into one buffered op.
 * Throws `compose_length_mismatch` unless a's target length is b's base length.
 * @param {Array<number|string>} a
 * @param {Array<number|string>} b
 * @returns {Array<number|string>}
 */
export function compose(a, b) {
  const pa = parse(a);
  const pb = parse(b);
  if (pa.target !== pb.base) {
    throw new OtError(
      'compose_length_mismatch',
      `cannot compose: the first operation produces ${pa.target} characters, the second expects ${pb.base}`,
    );
  }
  const out = new Builder();
  const wa = new Walker(pa.ops);
  const wb = new Walker(pb.ops);
  for (;;) {
    const x = wa.peek();
    const y = wb.peek();
    if (!x && !y) break;
    if (x && x.k === D) {
      push(out, wa.take());
      continue;
    }
    if (y && y.k === I) {
      push(out, wb.take());
      continue;
    }
    // Lengths were checked, so both remain here.
    const n = Math.min(x.n, y.n);
    if (x.k === R && y.k === R) {
      wa.take(n);
      wb.take(n);
      out.retain(n);
    } else if (x.k === I && y.k === D) {
      wa.take(n);
      wb.take(n);
    } else if (x.k === I && y.k === R) {
      push(out, wa.take(n));
      wb.take(n);
    } else {
      // x retain, y delete
      wa.take(n);
      out.delete(wb.take(n).n);
    }
  }
  return out.toWire();
}

/**
 * Transforms two concurrent operations on the same text: returns [a', b'] with
 * apply(apply(t, a), b') === apply(apply(t, b), a'). On inserts at the same position a's insert ends up
 * first (left), as in ot.js; the server uses transform(incoming, committed)[0] and a client
 * transform(ownPending, received), so both sides break ties the same way.
 * Throws `transform_length_mismatch` unless both have the same base length.
 * @param {Array<number|string>} a
 * @param {Array<number|string>} b
 * @returns {[Array<number|string>, Array<number|string>]}
 */
export function transform(a, b) {
  const pa = parse(a);
  const pb = parse(b);
  if (pa.base !== pb.base) {
    throw new OtError(
      'transform_length_mismatch',
      `cannot transform: the operations apply to texts of ${pa.base} and ${pb.base} characters`,
    );
  }
  const ap = new Builder();
  const bp = new Builder();
  const wa = new Walker(pa.ops);
  const wb = new Walker(pb.ops);
  for (;;) {
    const x = wa.peek();
    const y = wb.peek();
    if (!x && !y) break;
    if (x && x.k === I) {
      const part = wa.take();
      ap.insert(part.c);
      bp.retain(part.n);
      continue;
    }
    if (y && y.k === I) {
      const part = wb.take();
      ap.retain(part.n);
      bp.insert(part.c);
      continue;
    }
    const n = Math.min(x.n, y.n);
    wa.take(n);
    wb.take(n);
    if (x.k === R && y.k === R) {
      ap.retain(n);
      bp.retain(n);
    } else if (x.k === D && y.k === R) {
      ap.delete(n);
    } else if (x.k === R && y.k === D) {
      bp.delete(n);
    }
    // delete against delete: both already removed it.
  }
  return [ap.toWire(), bp.toWire()];
}

/**
 * The operation that undoes `op` on `text`: apply(apply(text, op), invert(text, op)) === text. Retains
 * stay, inserts become deletes and deletes become inserts of the text they removed (ot.js
 * `TextOperation.invert`), which is why the text is needed. Throws `base_length_mismatch` unless `op`
 * applies to `text`.
 * @param {string} text
 * @param {Array<number|string>} op
 * @returns {Array<number|string>}
 */
export function invert(text, op) {
  const b = parse(op);
  const chars = Array.from(text);
  if (b.base !== chars.length) {
    throw new OtError(
      'base_length_mismatch',
      `operation expects a base text of ${b.base} characters, but the text has ${chars.length}`,
    );
  }
  const out = new Builder();
  let pos = 0;
  for (const o of b.ops) {
    if (o.k === R) {
      out.retain(o.n);
      pos += o.n;
    } else if (o.k === I) {
      out.delete(o.n);
    } else {
      out.insert(chars.slice(pos, pos + o.n));
      pos += o.n;
    }
  }
  return out.toWire();
}

/**
 * Moves a position (a cursor, counted in code points) of the op's base text to the matching position of
 * its result, as ot.js does for selections: an insert at the cursor pushes it right, a deletion around it
 * pulls it to the deletion's start. Lets an editor keep the caret in place when a remote change arrives.
 * @param {Array<number|string>} op
 * @param {number} index
 * @returns {number}
 */
export function transformIndex(op, index) {
  const p = parse(op);
  let rest = index;
  let result = index;
  for (const o of p.ops) {
    if (o.k === R) {
      rest -= o.n;
    } else if (o.k === I) {
      result += o.n;
    } else {
      result -= Math.min(rest, o.n);
      rest -= o.n;
    }
    if (rest < 0) break;
  }
  return result;
}

/**
 * The operation that turns oldText into newText, found by the common prefix and suffix in code points:
 * what an editor that only sees "the value changed" (a textarea's input event) sends.
 *
 * `cursor`, optional, is the caret position in newText (code points) right after the edit. When the
 * change is ambiguous (typing "a" inside "aa"), the edit is placed to end at the caret, so that remote
 * users see it where it was typed.
 * @param {string} oldText
 * @param {string} newText
 * @param {number} [cursor]
 * @returns {Array<number|string>}
 */
export function fromDiff(oldText, newText, cursor) {
  const a = Array.from(oldText);
  const b = Array.from(newText);
  const min = Math.min(a.length, b.length);
  let prefix = 0;
  let suffix = 0;
  if (cursor === undefined || !Number.isInteger(cursor) || cursor < 0 || cursor > b.length) {
    while (prefix < min && a[prefix] === b[prefix]) prefix++;
    while (suffix < min - prefix && a[a.length - 1 - suffix] === b[b.length - 1 - suffix]) suffix++;
  } else {
    // Suffix first, not past the caret, then the prefix in what is left.
    const maxSuffix = Math.min(min, b.length - cursor);
    while (suffix < maxSuffix && a[a.length - 1 - suffix] === b[b.length - 1 - suffix]) suffix++;
    while (prefix < min - suffix && a[prefix] === b[prefix]) prefix++;
  }
  const out = new Builder();
  out.retain(prefix);
  out.insert(b.slice(prefix, b.length - suffix));
  out.delete(a.length - prefix - suffix);
  out.retain(suffix);
  return out.toWire();
}

// ---------------------------------------------------------------------------------------------------
// Undo history: the stacks of ot.js `UndoManager`, the same as the Rust client's (libs/client/src/undo.rs;
// the two are held to the shared scenarios of libs/client/vectors/undo-vectors.json). Pure: the time of an
// edit is an argument. `DocumentState` (tandem-client.js) keeps one per document; the rules are in README.md.

/** Undo steps kept per document by default; the oldest goes first. */
export const UNDO_DEPTH = 500;
/** Longest pause, in milliseconds, between two local edits of one typing run (one undo step). */
export const UNDO_WINDOW_MS = 1000;

/** `[retain start, insert or delete, retain rest]` (parts optional) as {insert, start, len}, else null. */
function simpleOp(op) {
  let parts = op;
  let start = 0;
  if (typeof parts[0] === 'number' && parts[0] > 0) {
    start = parts[0];
    parts = parts.slice(1);
  }
  const last = parts[parts.length - 1];
  if (typeof last === 'number' && last > 0) parts = parts.slice(0, -1);
  if (parts.length !== 1) return null;
  const p = parts[0];
  if (typeof p === 'string') return { insert: true, start, len: cpLength(p) };
  return p < 0 ? { insert: false, start, len: -p } : null;
}

/**
 * Whether the edit whose inverse is `next` continues the step whose inverse is `top` (ot.js
 * `shouldBeComposedWithInverted`): typing on (the inverses delete side by side), Backspace (the new
 * inverse inserts right before the step's) or Delete (at the same place).
 */
function continues(next, top) {
  const a = simpleOp(next);
  const b = simpleOp(top);
  if (!a || !b || a.insert !== b.insert) return false;
  return a.insert ? a.start + a.len === b.start || a.start === b.start : b.start + b.len === a.start;
}

/** Transforms a stack (oldest first) against `remote`, top first, dropping entries left without effect. */
function transformStack(stack, remote) {
  const out = [];
  let op = remote;
  for (let i = stack.length - 1; i >= 0; i--) {
    const [entry, moved] = transform(stack[i], op);
    if (!isNoop(entry)) out.push(entry);
    op = moved;
  }
  return out.reverse();
}

/**
 * The undo and redo stacks of one document: inverses of this client's own edits, never of others'.
 * A local edit's inverse joins the top step when the step is open (no undo, redo or breakGroup since it
 * began), the edit comes at most `windowMs` after the previous one, and it continues the step (typing
 * on, Backspace, Delete); otherwise it starts a new step. Remote ops transform every entry.
 */
export class UndoHistory {
  /** @param {{depth?: number, windowMs?: number}} [options] */
  constructor({ depth = UNDO_DEPTH, windowMs = UNDO_WINDOW_MS } = {}) {
    this.depth = depth;
    this.windowMs = windowMs;
    /** Inverses, oldest first; the last applies to the current text. */
    this.undoStack = [];
    this.redoStack = [];
    /** Time of the last local edit while the top step is open, else null. */
    this.openSince = null;
  }

  canUndo() {
    return this.undoStack.length > 0;
  }

  canRedo() {
    return this.redoStack.length > 0;
  }

  /** Takes the inverse of a local edit made at `at` (ms); clears the redo stack. No-ops are ignored. */
  record(inverse, at) {
    if (this.depth === 0 || isNoop(inverse)) return;
    const top = this.undoStack[this.undoStack.length - 1];
    const within = this.openSince !== null && at - this.openSince <= this.windowMs;
    let joined = null;
    if (top && within && continues(inverse, top)) {
      try {
        joined = compose(inverse, top);
      } catch {
        joined = null; // cannot happen (the lengths fit by construction); the edit gets its own step
      }
    }
    if (joined) this.undoStack[this.undoStack.length - 1] = joined;
    else this.#push(inverse);
    this.redoStack = [];
    this.openSince = at;
  }

  /** The inverse undo applies next, or undefined. */
  nextUndo() {
    return this.undoStack[this.undoStack.length - 1];
  }

  /** The inverse redo applies next, or undefined. */
  nextRedo() {
    return this.redoStack[this.redoStack.length - 1];
  }

  /** The top undo step was applied; `inverse` (which reverts that) becomes the top redo step. */
  undone(inverse) {
    this.undoStack.pop();
    this.redoStack.push(inverse);
    this.openSince = null;
  }

  /** The top redo step was applied; `inverse` becomes the top undo step. The rest of the redo stack stays. */
  redone(inverse) {
    this.redoStack.pop();
    this.#push(inverse);
    this.openSince = null;
  }

  /** The next local edit starts a new step. */
  breakGroup() {
    this.openSince = null;
  }

  /** Forgets everything (a snapshot replaced the text). */
  clear() {
    this.undoStack = [];
    this.redoStack = [];
    this.openSince = null;
  }

  /** A copy transformed against another client's op as applied to the local text; `this` is unchanged. */
  transformed(remote) {
    const next = new UndoHistory({ depth: this.depth, windowMs: this.windowMs });
    next.openSince = this.openSince;
    next.undoStack = isNoop(remote) ? this.undoStack.slice() : transformStack(this.undoStack, remote);
    next.redoStack = isNoop(remote) ? this.redoStack.slice() : transformStack(this.redoStack, remote);
    return next;
  }

  #push(inverse) {
    this.undoStack.push(inverse);
    if (this.undoStack.length > this.depth) this.undoStack.splice(0, this.undoStack.length - this.depth);
  }
}
