// RemoteSelections (presence.js): the selection each of two clients shows of the other equals the one the
// canonical history gives, in random interleavings of edits, caret moves, sequencing, delivery and relay —
// the same simulation as the Rust client's (libs/client/src/presence_sim.rs). Seeded: replay with SEED=...
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { apply, compose, transform, transformIndex } from '../ot.js';
import { RemoteSelections } from '../presence.js';
import { int, rng, seedFor } from './helpers.mjs';

const cp = (s) => Array.from(s);

/** An op: at `at` of a text `len` long, delete `del` code points and insert `ins`. */
function patch(len, at, del, ins) {
  const op = [];
  if (at > 0) op.push(at);
  if (ins) op.push(ins);
  if (del > 0) op.push(-del);
  if (len - at - del > 0) op.push(len - at - del);
  return op;
}

class Client {
  constructor(name) {
    this.name = name;
    this.version = 0;
    this.text = '';
    this.inflight = null;
    this.buffer = null;
    this.inbox = [];
    this.presenceInbox = [];
    this.received = [];
    this.others = new RemoteSelections(0);
    this.caret = 0;
    this.announcedBefore = null;
  }

  pending() {
    return [this.inflight, this.buffer].filter(Boolean);
  }

  edit(rand, fresh) {
    const len = cp(this.text).length;
    const at = int(rand, len + 1);
    let op;
    if (len > at && rand() < 0.35) {
      op = patch(len, at, 1 + int(rand, Math.min(len - at, 3)), '');
    } else {
      let ins = '';
      for (let i = 1 + int(rand, 3); i > 0; i--) ins += String.fromCodePoint(0x1f300 + fresh.n++); // astral: UTF-16 ≠ code points
      op = patch(len, at, 0, ins);
    }
    this.text = apply(this.text, op);
    this.caret = transformIndex(op, this.caret);
    if (!this.inflight) {
      this.inflight = op;
      return [this.version, op];
    }
    this.buffer = this.buffer ? compose(this.buffer, op) : op;
    return null;
  }

  moveCaret(rand) {
    const chars = cp(this.text);
    this.caret = int(rand, chars.length + 1);
    this.announcedBefore = this.pending().length === 0 ? chars[this.caret] ?? null : null;
    const index = RemoteSelections.toServer(this.caret, this.pending());
    return { version: this.version, anchor: index, head: index };
  }

  takeOne() {
    const msg = this.inbox.shift();
    if (!msg) return null;
    if (msg.type === 'op') {
      let received = msg.op;
      if (this.inflight) [this.inflight, received] = transform(this.inflight, received);
      if (this.buffer) [this.buffer, received] = transform(this.buffer, received);
      this.text = apply(this.text, received);
      this.caret = transformIndex(received, this.caret);
      this.others.apply(msg.version, msg.op);
      this.version = msg.version;
      return null;
    }
    this.others.apply(msg.version, this.inflight);
    this.version = msg.version;
    this.inflight = this.buffer;
    this.buffer = null;
    return this.inflight ? [this.version, this.inflight] : null;
  }

  takePresence(other) {
    const frame = this.presenceInbox.shift();
    if (!frame) return;
    this.others.update({ client: other, user: other }, frame);
    this.received.push(frame);
  }

  expected(history) {
    const frame = [...this.received].reverse().find((f) => f.version <= this.version);
    if (!frame) return null;
    const ops = [...history.slice(frame.version, this.version), ...this.pending()];
    return [frame.anchor, frame.head].map((i) => ops.reduce((j, op) => transformIndex(op, j), i));
  }

  shown() {
    const [other] = this.others.shown(this.pending());
    return other && other.anchor !== undefined ? [other.anchor, other.head] : null;
  }
}

function run(seed, steps) {
  const rand = rng(seed);
  const clients = [new Client('ann'), new Client('bob')];
  const server = { text: '', history: [], submitted: [[], []], announced: [[], []], relayedAt: [0, 0] };
  const fresh = { n: 0 };
  const sequence = (from) => {
    const next = server.submitted[from].shift();
    if (!next) return;
    let [base, op] = next;
    for (const committed of server.history.slice(base)) [op] = transform(op, committed);
    server.text = apply(server.text, op);
    server.history.push(op);
    const version = server.history.length;
    clients[from].inbox.push({ type: 'ack', version });
    clients[1 - from].inbox.push({ type: 'op', version, op });
  };
  const relay = (from) => {
    const s = server.announced[from].shift();
    if (!s) return;
    const now = server.history.length;
    const lowest = Math.max(s.version, server.relayedAt[from]);
    const at = lowest + int(rand, now - lowest + 1);
    server.relayedAt[from] = at;
    const ops = server.history.slice(s.version, at);
    const moved = (i) => ops.reduce((j, op) => transformIndex(op, j), i);
    clients[1 - from].presenceInbox.push({ version: at, anchor: moved(s.anchor), head: moved(s.head) });
  };
  for (let step = 0; step < steps; step++) {
    const who = int(rand, 2);
    const c = clients[who];
    switch (int(rand, 7)) {
      case 0:
      case 1: {
        const submit = c.edit(rand, fresh);
        if (submit) server.submitted[who].push(submit);
        break;
      }
      case 2:
        server.announced[who].push(c.moveCaret(rand));
        break;
      case 3:
        sequence(who);
        break;
      case 4: {
        const submit = c.takeOne();
        if (submit) server.submitted[who].push(submit);
        break;
      }
      case 5:
        relay(1 - who);
        break;
      default:
        c.takePresence(clients[1 - who].name);
    }
    for (const client of clients) {
      assert.deepEqual(client.shown(), client.expected(server.history), `seed ${seed}, step ${step}: ${client.name}`);
    }
  }
  for (let busy = true; busy; ) {
    busy = false;
    for (const who of [0, 1]) {
      const c = clients[who];
      busy ||= server.submitted[who].length + c.inbox.length + server.announced[who].length + c.presenceInbox.length > 0;
      sequence(who);
      const submit = c.takeOne();
      if (submit) server.submitted[who].push(submit);
      relay(who);
      c.takePresence(clients[1 - who].name);
    }
  }
  for (const who of [0, 1]) {
    const c = clients[who];
    const other = clients[1 - who];
    assert.equal(c.text, server.text, `seed ${seed}: ${c.name} diverged`);
    assert.deepEqual(c.shown(), c.expected(server.history), `seed ${seed}: ${c.name} at the end`);
    const shown = c.shown();
    if (other.announcedBefore && shown) {
      const at = cp(c.text).indexOf(other.announcedBefore);
      if (at >= 0) assert.equal(shown[1], at, `seed ${seed}: ${other.name}'s caret left its character`);
    }
  }
}

test('remote carets follow the canonical history in random interleavings', () => {
  const seed = seedFor('presence');
  const rand = rng(seed);
  for (let i = 0; i < 300; i++) run((rand() * 2 ** 32) >>> 0, 200);
});

test('a caret moves with later versions, waits for future ones and shows through pending edits', () => {
  const others = new RemoteSelections(1); // "hello"
  const ann = { client: 'ann', user: 'ann', name: 'Ann' };
  others.update(ann, { version: 1, anchor: 1, head: 4 });
  others.apply(2, ['ab', 5]);
  assert.deepEqual(others.shown([]), [{ ...ann, anchor: 3, head: 6 }]);
  others.update(ann, { version: 3, anchor: 0, head: 0 });
  assert.deepEqual(others.shown([])[0].head, 6, 'waits for version 3');
  others.apply(3, [-2, 5]);
  assert.deepEqual(others.shown([])[0].head, 0);
  assert.deepEqual(others.shown([[5, '!']])[0], { ...ann, anchor: 0, head: 0 });
  others.update(ann, { version: 3, anchor: 5, head: 5 });
  assert.equal(others.shown([[5, '!']])[0].head, 6, 'own typing at the caret pushes it right');
  assert.equal(RemoteSelections.toServer(5, [[2, 'xyz', -1, 3]]), 2);
  assert.equal(RemoteSelections.toServer(6, [[2, 'xyz', -1, 3]]), 4);
  others.remove('ann');
  assert.deepEqual(others.shown([]), []);
});
