// Offline edits kept across a reload (offline.js and TandemClient's `storage` option): a client that
// edits offline and is then thrown away ("the page reloads") leaves its session and pending edits in
// the storage; the next client on that storage takes the session over and sends them, once, with
// their original seq and base. First against a scripted server (what goes on the wire, exactly), then
// against a REAL single-process server (TANDEM_BIN, as server.test.mjs), where an op whose ack was
// lost before the reload must still be applied exactly once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { DocumentState, MemoryStorage, OfflineStore, TandemClient, randomClientId } from '../tandem-client.js';
import { int, randomString, rng, seedFor } from './helpers.mjs';
import { startServer } from './server-process.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond, describe, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out; ${describe()}`);
    await sleep(10);
  }
}

/** A WebSocket stand-in the test plays the server for (as in client.test.mjs). */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code }));
  }
  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }
  recv(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  take() {
    const s = this.sent;
    this.sent = [];
    return s;
  }
}

function fakeClient(storage, extra = {}) {
  return new TandemClient('ws://test/v1/ws', {
    WebSocket: FakeSocket,
    storage,
    pingIntervalMs: 0,
    initialBackoffMs: 1,
    maxBackoffMs: 5,
    ...extra,
  });
}

async function nextSocket(count) {
  await waitFor(() => FakeSocket.all.length >= count, () => `${FakeSocket.all.length} sockets, want ${count}`);
  return FakeSocket.all[count - 1];
}

test('offline: edits made offline survive a reload and go out once, with their original seq and base', async () => {
  FakeSocket.all = [];
  const storage = new MemoryStorage();
  const first = fakeClient(storage);
  const id = await first.session;
  const handle = first.open('d');
  const s1 = await nextSocket(1);
  s1.accept();
  assert.deepEqual(s1.take(), [{ type: 'hello', protocol: 1, client: id }]);
  s1.recv({ type: 'welcome', protocol: 1, author: 'scoped-me' });
  assert.deepEqual(s1.take(), [{ type: 'open', doc: 'd' }]);
  s1.recv({ type: 'snapshot', doc: 'd', version: 4, text: 'abc' });
  await handle.ready;

  handle.edit([3, 'd']); // sent: seq 1, base 4
  const [sent] = s1.take();
  assert.deepEqual(sent, { type: 'op', doc: 'd', seq: 1, base: 4, op: [3, 'd'] });
  s1.close(); // the network goes; the ack never comes
  handle.edit([4, 'e']); // buffered
  handle.edit([5, 'f']); // buffered, composed
  assert.equal(handle.pendingEdits, 3);
  assert.equal(handle.text, 'abcdef');
  first.close(); // the page goes away

  // The reload: a new client on the same storage, not yet connected.
  const second = fakeClient(storage);
  assert.equal(await second.session, id, 'the reloaded page takes its session over');
  const h2 = second.open('d');
  await h2.ready; // offline: the text and the pending edits are back from storage at once
  assert.equal(h2.text, 'abcdef');
  assert.equal(h2.pendingEdits, 3);
  const s2 = FakeSocket.all.at(-1);
  s2.accept();
  assert.deepEqual(s2.take(), [{ type: 'hello', protocol: 1, client: id }]);
  s2.recv({ type: 'welcome', protocol: 1 });
  assert.deepEqual(s2.take(), [{ type: 'open', doc: 'd', since: 4 }]);
  // Someone else's op came in meanwhile; the first op was not acknowledged (never reached the log).
  s2.recv({ type: 'op', doc: 'd', version: 5, client: 'other', op: ['X', 3] });
  s2.recv({ type: 'opened', doc: 'd', version: 5 });
  assert.deepEqual(s2.take(), [sent], 'the in-flight op again, exactly as first sent');
  s2.recv({ type: 'ack', doc: 'd', seq: 1, version: 6 });
  assert.deepEqual(s2.take(), [{ type: 'op', doc: 'd', seq: 2, base: 6, op: [5, 'ef'] }], 'then the buffer, next seq');
  s2.recv({ type: 'ack', doc: 'd', seq: 2, version: 7 });
  assert.equal(h2.text, 'Xabcdef');
  assert.equal(h2.pendingEdits, 0);
  second.close();

  // A third load has nothing to send, and seq goes on from 3.
  const third = fakeClient(storage);
  await third.session;
  const h3 = third.open('d');
  await h3.ready;
  assert.equal(h3.pendingEdits, 0);
  const s3 = FakeSocket.all.at(-1);
  s3.accept();
  s3.recv({ type: 'welcome', protocol: 1 });
  s3.recv({ type: 'opened', doc: 'd', version: 7 });
  s3.take();
  h3.edit([7, '!']);
  assert.equal(s3.take()[0].seq, 3);
  third.close();
});

test('offline: a second tab holding the stored session gets a session of its own', async () => {
  FakeSocket.all = [];
  // A Web Locks stand-in: a lock is held until its callback's promise settles.
  const held = new Set();
  const locks = {
    request(name, options, callback) {
      if (held.has(name)) return Promise.resolve(callback(null));
      held.add(name);
      return Promise.resolve(callback({ name })).then(() => held.delete(name));
    },
  };
  const storage = new MemoryStorage();
  const tabA = fakeClient(storage, { locks });
  const tabB = fakeClient(storage, { locks });
  const [a, b] = [await tabA.session, await tabB.session];
  assert.notEqual(a, b, 'two live tabs never share a session (their seqs would collide)');
  tabA.close(); // releases A's lock
  await sleep(0);
  const tabC = fakeClient(storage, { locks });
  assert.equal(await tabC.session, a, 'a reloaded tab takes over the session nobody holds');
  tabB.close();
  tabC.close();
});

test('offline: stored states that are not ours or not whole are ignored, not guessed at', () => {
  assert.equal(DocumentState.fromJSON({ doc: 'd', text: 'x', version: -1, nextSeq: 1, inflight: null, buffer: null }), null);
  assert.equal(DocumentState.fromJSON({ doc: 'd', text: 'x', version: 1, nextSeq: 1, inflight: null, buffer: [1, 'y'] }), null);
  assert.equal(DocumentState.fromJSON({ doc: 'd', text: 'x', version: 1, nextSeq: 1, inflight: { seq: 1 }, buffer: null }), null);
  const storage = new MemoryStorage();
  const store = new OfflineStore(storage, 's', null);
  storage.setItem('tandem/s/me/d', '{not json');
  assert.equal(store.load('me', 'd'), null);
  storage.setItem('tandem/s/me/d', JSON.stringify({ layout: 99, doc: 'd' }));
  assert.equal(store.load('me', 'd'), null);
});

test('offline: a seeded run of edits, drops and reloads keeps every edit exactly once (scripted server)', async () => {
  const seed = seedFor('offline: reloads');
  const rand = rng(seed);
  FakeSocket.all = [];
  const storage = new MemoryStorage();
  // The scripted server's log: what it committed, by (seq), and its text.
  let serverText = '';
  let version = 0;
  const committed = new Map();
  const expected = [];
  let client = null;
  let handle = null;
  // The catch-up of an `open` with `since`: only this client writes, so every version is one of its
  // own ops, acknowledged again (the ack the client may have missed).
  const catchUp = (s, since) => {
    for (const [seq, v] of committed) if (v > since) s.recv({ type: 'ack', doc: 'r', seq, version: v });
    s.recv({ type: 'opened', doc: 'r', version });
  };
  const serve = async () => {
    const s = FakeSocket.all.at(-1);
    s.accept();
    for (const m of s.take()) {
      if (m.type !== 'hello') assert.fail(`unexpected first frame ${JSON.stringify(m)}`);
    }
    s.recv({ type: 'welcome', protocol: 1 });
    return s;
  };
  for (let round = 0; round < 20; round++) {
    client = fakeClient(storage);
    await client.session;
    handle = client.open('r');
    const s = await serve();
    for (const m of s.take()) {
      if (m.type === 'open' && m.since === undefined) s.recv({ type: 'snapshot', doc: 'r', version, text: serverText });
      else if (m.type === 'open') catchUp(s, m.since);
    }
    await handle.ready;
    // Edit, answering some ops, dropping the connection at random; then "reload".
    for (let i = 0; i < 1 + int(rand, 6); i++) {
      const marker = `<${round}.${i}>`;
      expected.push(marker);
      handle.edit([Array.from(handle.text).length, marker]);
      for (const m of s.take()) {
        if (m.type !== 'op') continue;
        if (committed.has(m.seq)) {
          s.recv({ type: 'ack', doc: 'r', seq: m.seq, version: committed.get(m.seq) });
          continue;
        }
        assert.equal(m.base, version, 'only this client writes, so every op is based on the latest version');
        serverText = serverText + m.op.filter((c) => typeof c === 'string').join('');
        committed.set(m.seq, ++version);
        if (rand() < 0.7) s.recv({ type: 'ack', doc: 'r', seq: m.seq, version });
      }
    }
    client.close();
  }
  // A last load online delivers whatever is left.
  client = fakeClient(storage);
  await client.session;
  handle = client.open('r');
  const s = await serve();
  for (let i = 0; i < 100 && !handle.synced; i++) {
    for (const m of s.take()) {
      if (m.type === 'open') catchUp(s, m.since);
      if (m.type !== 'op') continue;
      if (!committed.has(m.seq)) {
        serverText += m.op.filter((c) => typeof c === 'string').join('');
        committed.set(m.seq, ++version);
      }
      s.recv({ type: 'ack', doc: 'r', seq: m.seq, version: committed.get(m.seq) });
    }
    await sleep(1);
  }
  client.close();
  assert.equal(serverText, expected.join(''), `SEED=${seed}: every edit once, in order`);
  assert.deepEqual([...committed.keys()], [...committed.keys()].map((_, i) => i + 1), `SEED=${seed}: seqs without gap`);
});

// --- against a real server ---------------------------------------------------------------------------

let server = null;
before(async () => {
  if (process.env.TANDEM_BIN) server = await startServer(['--insecure-no-auth']);
});
after(() => server?.stop());

/** A WebSocket the test can take offline: while `offline`, connecting fails and incoming acks can be cut. */
function switchableWebSocket(net) {
  return class extends globalThis.WebSocket {
    constructor(url, protocols) {
      super(net.offline ? 'ws://127.0.0.1:9/unreachable' : url, protocols);
      const socket = this;
      queueMicrotask(() => {
        const deliver = socket.onmessage;
        if (!deliver) return;
        socket.onmessage = (event) => {
          if (net.dropAcks && String(event.data).includes('"type":"ack"')) return;
          deliver(event);
        };
      });
    }
  };
}

test('offline, real server: an op whose ack was lost and edits made offline are applied exactly once after a reload', { timeout: 60000 }, async (t) => {
  if (!server) return t.skip('TANDEM_BIN is not set');
  const doc = `offline-${randomClientId()}`;
  const storage = new MemoryStorage();
  const net = { offline: false, dropAcks: false };
  const options = { storage, pingIntervalMs: 0, initialBackoffMs: 20, maxBackoffMs: 100, WebSocket: switchableWebSocket(net) };
  const reader = new TandemClient(server.wsUrl, { pingIntervalMs: 0 });
  const seen = reader.open(doc);
  try {
    const page = new TandemClient(server.wsUrl, options);
    const h = page.open(doc);
    await h.ready;
    h.edit([0, 'one ']);
    await h.whenSynced();
    // The next op reaches the log, but its ack is lost; then the network goes.
    net.dropAcks = true;
    h.edit([4, 'two ']);
    await waitFor(() => seen.text === 'one two ', () => `reader has ${JSON.stringify(seen.text)}`);
    net.offline = true;
    page.socket?.close();
    h.edit([8, 'three ']);
    h.edit([14, randomString(rng(1), 3, Array.from('xyz'))]);
    assert.equal(h.pendingEdits, 3);
    const typed = h.text;
    page.close(); // reload while offline
    net.dropAcks = false;

    const reloaded = new TandemClient(server.wsUrl, options);
    const h2 = reloaded.open(doc);
    await h2.ready;
    assert.equal(h2.text, typed, 'the offline text is back before any connection');
    assert.equal(h2.pendingEdits, 3);
    net.offline = false; // back online
    await h2.whenSynced();
    await waitFor(() => seen.text === typed, () => `reader ${JSON.stringify(seen.text)}, page ${JSON.stringify(typed)}`);
    assert.equal(seen.text.split('two ').length - 1, 1, 'the op whose ack was lost is applied once');
    assert.equal(h2.version, 3, 'three commits: one, two, and the buffer of the offline edits');
    reloaded.close();
  } finally {
    reader.close();
  }
});
