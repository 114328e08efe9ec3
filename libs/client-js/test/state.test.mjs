// Tests of DocumentState, the pure client state machine: unit tests of each transition, then a seeded
// randomized simulation of three clients and a model of the server of PROTOCOL.md with random delivery
// interleaving, dropped connections (reconnect with `since` and resubmission) and rejected ops.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { apply, DocumentState, normalize, transform } from '../tandem-client.js';
import { cpLen, int, randomOp, rng, seedFor } from './helpers.mjs';

test('synced -> awaiting ack -> awaiting with buffer -> synced', () => {
  const s = new DocumentState('d', { text: 'abc', version: 4 });
  assert.equal(s.state, 'synced');
  assert.deepEqual(s.localEdit([3, 'd']), { type: 'op', doc: 'd', seq: 1, base: 4, op: [3, 'd'] });
  assert.equal(s.text, 'abcd');
  assert.equal(s.state, 'awaiting');
  assert.equal(s.localEdit([4, 'e']), null);
  assert.equal(s.localEdit([-1, 4]), null);
  assert.equal(s.state, 'awaiting_with_buffer');
  assert.equal(s.text, 'bcde');
  assert.deepEqual(s.buffer, [-1, 3, 'e']);
  assert.deepEqual(s.onAck(1, 5), { type: 'op', doc: 'd', seq: 2, base: 5, op: [-1, 3, 'e'] });
  assert.equal(s.state, 'awaiting');
  assert.equal(s.onAck(2, 6), null);
  assert.equal(s.state, 'synced');
  assert.ok(s.synced);
  assert.equal(s.version, 6);
  assert.equal(s.nextSeq, 3);
});

test('local edits are normalised and checked before anything changes', () => {
  const s = new DocumentState('d', { text: 'ab' });
  assert.throws(() => s.localEdit([3]), { code: 'base_length_mismatch' });
  assert.equal(s.text, 'ab');
  assert.equal(s.nextSeq, 1);
  assert.deepEqual(s.localEdit([0, -1, 'x', 1]).op, ['x', -1, 1]);
});

test('remote ops transform the in-flight op and the buffer, own pending first', () => {
  const s = new DocumentState('d', { text: 'ab', version: 1 });
  const sent = s.localEdit([1, 'X', 1]).op; // aXb
  s.localEdit([3, 'Y']); // aXbY
  // Another client inserted at the same position as our in-flight op: ours stays left, as on the server.
  const applied = s.onRemoteOp(2, [1, 'Z', 1]);
  assert.equal(s.text, 'aXZbY');
  assert.deepEqual(applied, [2, 'Z', 2]);
  assert.equal(s.version, 2);
  // The in-flight op is transformed for later use, but resent exactly as sent.
  assert.deepEqual(s.inflight.op, [1, 'X', 2]);
  assert.deepEqual(s.resendMessage(), { type: 'op', doc: 'd', seq: 1, base: 1, op: sent });
  // Server side of the same history: the incoming op is transformed against the committed one.
  const serverText = apply(apply('ab', [1, 'Z', 1]), transform(sent, [1, 'Z', 1])[0]);
  assert.equal(serverText, 'aXZb');
  // Ack, then the buffer goes out with base = the ack's version.
  assert.deepEqual(s.onAck(1, 3), { type: 'op', doc: 'd', seq: 2, base: 3, op: [4, 'Y'] });
  assert.equal(apply(serverText, [4, 'Y']), s.text);
});

test('ordering violations throw and leave the state unchanged', () => {
  const s = new DocumentState('d', { text: 'ab', version: 3 });
  assert.throws(() => s.onRemoteOp(5, [2, 'x']), { code: 'version_gap' });
  assert.throws(() => s.onAck(1, 4), { code: 'unexpected_ack' });
  s.localEdit([2, '!']);
  assert.throws(() => s.onAck(2, 4), { code: 'unexpected_ack' });
  assert.throws(() => s.onAck(1, 6), { code: 'version_gap' });
  assert.throws(() => s.onRemoteOp(4, [3, 'x']), { code: 'transform_length_mismatch' });
  assert.equal(s.text, 'ab!');
  assert.equal(s.version, 3);
  assert.deepEqual(s.inflight.op, [2, '!']);
});

test('discardPending and reset drop pending edits but keep the seq counter', () => {
  const s = new DocumentState('d', { text: 'ab', version: 3 });
  s.localEdit([2, '!']);
  s.localEdit([3, '?']);
  s.discardPending();
  assert.ok(s.synced);
  // Edits while waiting for the fresh snapshot change the text but take no seq.
  assert.equal(s.localEdit([4, '#']), null);
  assert.equal(s.text, 'ab!?#');
  assert.ok(s.synced);
  s.reset('fresh', 9);
  assert.ok(s.synced);
  assert.equal(s.resendMessage(), null);
  assert.equal(s.text, 'fresh');
  assert.equal(s.version, 9);
  assert.equal(s.localEdit([5, '.']).seq, 2, 'a rejected op uses its seq up');
});

test('resendMessage is null when nothing is in flight', () => {
  assert.equal(new DocumentState('d').resendMessage(), null);
});

// ---------------------------------------------------------------------------------------------------
// Simulation.

/** The server of PROTOCOL.md for one document, synchronous: transforms each incoming op against every
 * op committed after its base, one at a time in version order. */
class ServerModel {
  constructor() {
    this.text = '';
    this.history = []; // history[v - 1] = {op, client, seq} committed as version v
    this.lastSeq = new Map();
    this.rejected = new Set();
    this.conns = new Set();
  }

  get version() {
    return this.history.length;
  }

  receive(conn, msg, rand, rejectRate) {
    switch (msg.type) {
      case 'open':
        conn.subscribed = true;
        if (msg.since === undefined) {
          conn.down.push({ type: 'snapshot', doc: 'd', version: this.version, text: this.text });
        } else {
          assert.ok(msg.since <= this.version, 'since ahead of the document');
          for (let v = msg.since + 1; v <= this.version; v++) conn.down.push(this.#delivery(conn, v));
          conn.down.push({ type: 'opened', doc: 'd', version: this.version });
        }
        return;
      case 'close':
        conn.subscribed = false;
        return;
      case 'op':
        break;
      default:
        assert.fail(`unexpected message ${JSON.stringify(msg)}`);
    }
    assert.ok(conn.subscribed, 'op on a document that is not open');
    const last = this.lastSeq.get(conn.client) ?? 0;
    if (msg.seq <= last) {
      // A resubmission. This connection has always received the committed version already (catch-up
      // happens before any resend), so nothing is sent; a rejected op gets its error again.
      if (this.rejected.has(msg.seq + ':' + conn.client)) conn.down.push(invalid(msg.seq));
      return;
    }
    assert.equal(msg.seq, last + 1, 'seq gap');
    assert.ok(msg.base <= this.version, 'base in the future');
    this.lastSeq.set(conn.client, msg.seq);
    if (rand() < rejectRate) {
      this.rejected.add(msg.seq + ':' + conn.client);
      conn.down.push(invalid(msg.seq));
      return;
    }
    let op = msg.op;
    for (let v = msg.base; v < this.version; v++) op = transform(op, this.history[v].op)[0];
    this.text = apply(this.text, op); // throws if the client sent an op that does not fit
    this.history.push({ op: normalize(op), client: conn.client, seq: msg.seq });
    for (const c of this.conns) if (c.subscribed) c.down.push(this.#delivery(c, this.version));
  }

  #delivery(conn, v) {
    const h = this.history[v - 1];
    return h.client === conn.client
      ? { type: 'ack', doc: 'd', seq: h.seq, version: v }
      : { type: 'op', doc: 'd', version: v, client: h.client, op: h.op };
  }
}

const invalid = (seq) => ({ type: 'error', code: 'invalid_op', message: 'rejected', doc: 'd', seq });

/** A client as TandemClient drives DocumentState, with a connection made of two FIFO queues. */
class SimClient {
  constructor(id) {
    this.id = id;
    this.state = null;
    this.phase = 'offline';
    this.fresh = true;
    this.conn = null;
    this.edits = 0;
  }

  connect(server) {
    this.conn = { client: this.id, up: [], down: [], subscribed: false };
    server.conns.add(this.conn);
    if (this.fresh || !this.state) {
      this.phase = 'opening';
      this.conn.up.push({ type: 'open', doc: 'd' });
    } else {
      this.phase = 'catching_up';
      this.conn.up.push({ type: 'open', doc: 'd', since: this.state.version });
    }
  }

  /** The connection breaks: whatever is still in flight in either direction is lost. */
  disconnect(server) {
    server.conns.delete(this.conn);
    this.conn = null;
    if (this.phase !== 'opening') this.phase = 'offline';
  }

  edit(rand) {
    if (!this.state) return;
    const msg = this.state.localEdit(randomOp(rand, cpLen(this.state.text)));
    this.edits++;
    if (msg && this.phase === 'ready') this.conn.up.push(msg);
  }

  receive(msg) {
    const s = this.state;
    switch (msg.type) {
      case 'snapshot':
        if (this.phase !== 'opening') return;
        if (s) s.reset(msg.text, msg.version);
        else this.state = new DocumentState('d', { text: msg.text, version: msg.version });
        this.fresh = false;
        this.phase = 'ready';
        return;
      case 'op':
        if (this.phase === 'ready' || this.phase === 'catching_up') s.onRemoteOp(msg.version, msg.op);
        return;
      case 'ack':
        if (this.phase === 'ready' || this.phase === 'catching_up') {
          const next = s.onAck(msg.seq, msg.version);
          if (next && this.phase === 'ready') this.conn.up.push(next);
        }
        return;
      case 'opened': {
        assert.equal(this.phase, 'catching_up');
        assert.equal(msg.version, s.version);
        this.phase = 'ready';
        const resend = s.resendMessage();
        if (resend) this.conn.up.push(resend);
        return;
      }
      case 'error':
        assert.equal(msg.code, 'invalid_op');
        s.discardPending();
        this.fresh = true;
        this.phase = 'opening';
        this.conn.up.push({ type: 'close', doc: 'd' }, { type: 'open', doc: 'd' });
        return;
      default:
        assert.fail(`unexpected ${JSON.stringify(msg)}`);
    }
  }
}

function simulate(seed, { steps, rejectRate, dropRate }) {
  const rand = rng(seed);
  const server = new ServerModel();
  const clients = ['alice', 'bob', 'carol'].map((id) => new SimClient(id));
  for (const c of clients) c.connect(server);
  const online = () => clients.filter((c) => c.conn);
  const deliverUp = (c) => server.receive(c.conn, c.conn.up.shift(), rand, rejectRate);
  const deliverDown = (c) => c.receive(c.conn.down.shift());

  for (let step = 0; step < steps; step++) {
    const c = clients[int(rand, clients.length)];
    const r = rand();
    if (!c.conn) {
      if (r < 0.3) c.connect(server);
      else if (r < 0.6) c.edit(rand); // editing offline
    } else if (r < dropRate) {
      c.disconnect(server);
    } else if (r < 0.35) {
      c.edit(rand);
    } else if (r < 0.65) {
      if (c.conn.up.length) deliverUp(c);
    } else if (c.conn.down.length) {
      deliverDown(c);
    }
  }
  // Drain: everyone reconnects, every message is delivered, in random interleaving.
  for (const c of clients) if (!c.conn) c.connect(server);
  for (let guard = 0; ; guard++) {
    assert.ok(guard < 1e6, 'drain does not terminate');
    const busy = online().filter((c) => c.conn.up.length || c.conn.down.length);
    if (busy.length === 0) break;
    const c = busy[int(rand, busy.length)];
    if (c.conn.up.length && (rand() < 0.5 || !c.conn.down.length)) deliverUp(c);
    else deliverDown(c);
  }
  for (const c of clients) {
    const where = `seed ${seed}, client ${c.id}`;
    assert.equal(c.phase, 'ready', where);
    assert.ok(c.state.synced, `${where}: pending edits left`);
    assert.equal(c.state.version, server.version, where);
    assert.equal(c.state.text, server.text, where);
  }
  return { server, clients };
}

test('randomized: three clients converge with the server, reliable network (seeded)', () => {
  const base = seedFor('state simulation, reliable');
  for (let i = 0; i < 40; i++) {
    const { server, clients } = simulate((base + i) >>> 0, { steps: 400, rejectRate: 0, dropRate: 0 });
    // Nothing is lost: with no rejection, every seq a client used was committed.
    for (const c of clients) {
      const committed = server.history.filter((h) => h.client === c.id).map((h) => h.seq);
      assert.deepEqual(committed, Array.from({ length: c.state.nextSeq - 1 }, (_, k) => k + 1));
    }
  }
});

test('randomized: convergence with dropped connections and rejected ops (seeded)', () => {
  const base = seedFor('state simulation, faulty');
  for (let i = 0; i < 60; i++) {
    simulate((base + i) >>> 0, { steps: 600, rejectRate: 0.03, dropRate: 0.03 });
  }
});

test('randomized: dropped connections lose no edit (seeded)', () => {
  const base = seedFor('state simulation, reconnects');
  for (let i = 0; i < 60; i++) {
    const { server, clients } = simulate((base + i) >>> 0, { steps: 600, rejectRate: 0, dropRate: 0.05 });
    for (const c of clients) {
      const committed = server.history.filter((h) => h.client === c.id).map((h) => h.seq);
      assert.deepEqual(committed, Array.from({ length: c.state.nextSeq - 1 }, (_, k) => k + 1), 'each seq committed once');
    }
  }
});
