// End-to-end tests against a REAL single-process Tandem server.
//
// TANDEM_BIN must name the server binary (`make test` sets it). The server is started as
//   $TANDEM_BIN --listen 127.0.0.1:0 --data-dir <fresh temp dir> --insecure-no-auth (see server-process.mjs)
// and must print a line containing `listening on http://127.0.0.1:PORT/` on stdout once ready.
// Optional: TANDEM_TOKEN (a bearer token, if the server requires one), TANDEM_ARGS (extra arguments,
// space-separated), SEED (replay the random edits).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { TandemClient, randomClientId } from '../tandem-client.js';
import { cpLen, int, randomString, rng, seedFor } from './helpers.mjs';
import { startServer } from './server-process.mjs';

const WS = globalThis.WebSocket;
const TOKEN = process.env.TANDEM_TOKEN || undefined;

let server = null;
let wsUrl = null;
const output = () => server?.output() ?? '';

before(async () => {
  const extra = (process.env.TANDEM_ARGS || '').split(/\s+/).filter(Boolean);
  server = await startServer(TOKEN ? extra : ['--insecure-no-auth', ...extra]);
  wsUrl = server.wsUrl;
});

after(() => server?.stop());

// --- helpers ----------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls until `cond()` holds; on timeout fails with `describe()` to show where things stand. */
async function waitFor(cond, describe, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out; ${describe()}\nserver output (tail):\n${output().slice(-3000)}`);
    await sleep(20);
  }
}

/** Awaits a promise, failing after `ms` with `what` (instead of hanging until the test's timeout). */
async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms; server output (tail):\n${output().slice(-3000)}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A TandemClient that records errors, so a test can assert there were none. */
function makeClient(errors) {
  return new TandemClient(wsUrl, {
    WebSocket: WS,
    token: TOKEN,
    pingIntervalMs: 0,
    initialBackoffMs: 50,
    maxBackoffMs: 500,
    onError: (e) => errors.push(e),
  });
}

function openDoc(client, doc, errors) {
  return client.open(doc, { onError: (e) => errors.push(e) });
}

function describeHandles(...handles) {
  return handles
    .map((h) => `${h.client.clientId}: ${h.phase}/${h.status} v${h.version} synced=${h.synced} text=${JSON.stringify(h.text)}`)
    .join('\n');
}

/** A random edit on a text: insert, delete or replace, keeping the document small. */
function randomEdit(rand, text) {
  const len = cpLen(text);
  const pos = int(rand, len + 1);
  const del = len > 60 || rand() < 0.35 ? int(rand, Math.min(5, len - pos) + 1) : 0;
  const ins = len > 120 ? '' : randomString(rand, 3);
  return [pos, ins, -del, len - pos - del];
}

/** A raw protocol connection: sends JSON objects, collects received ones, waits for a matching one. */
async function rawConnection() {
  const ws = TOKEN ? new WS(wsUrl, ['tandem.v1', `tandem.bearer.${TOKEN}`]) : new WS(wsUrl);
  const received = [];
  const conn = {
    ws,
    received,
    closed: null,
    send: (msg) => ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg)),
    async next(pred, what, timeoutMs = 10000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const i = received.findIndex(pred);
        if (i >= 0) return received.splice(i, 1)[0];
        if (Date.now() > deadline) {
          assert.fail(`no ${what} within ${timeoutMs} ms; received ${JSON.stringify(received)}; closed ${JSON.stringify(conn.closed)}`);
        }
        await sleep(10);
      }
    },
  };
  ws.onmessage = (e) => received.push(JSON.parse(e.data));
  ws.onclose = (e) => {
    conn.closed = { code: e.code, reason: e.reason };
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`cannot connect to ${wsUrl}`));
  });
  return conn;
}

// --- tests ------------------------------------------------------------------------------------------

test('ops name their author by the id its welcome announced (scoped by its user), not the id it chose', { timeout: 30000 }, async () => {
  const doc = `author-${randomClientId()}`;
  const errors = [];
  const writer = makeClient(errors);
  const reader = makeClient(errors);
  try {
    const authors = [];
    const w = openDoc(writer, doc, errors);
    const r = reader.open(doc, {
      onError: (e) => errors.push(e),
      onChange: (c) => {
        if (!c.reset) authors.push(c.client);
      },
    });
    await within(Promise.all([w.ready, r.ready]), 10000, 'snapshots of two clients');
    assert.match(writer.author, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(writer.author, writer.clientId);
    w.edit(['hi']);
    await waitFor(() => r.version === 1 && w.synced, () => describeHandles(w, r));
    assert.deepEqual(authors, [writer.author]);
    assert.deepEqual(errors, []);
  } finally {
    writer.close();
    reader.close();
  }
});

test('two clients editing concurrently converge, and a fresh client gets the same text', { timeout: 60000 }, async () => {
  const rand = rng(seedFor('server: concurrent edits'));
  const doc = `conv-${randomClientId()}`;
  const errors = [];
  const c1 = makeClient(errors);
  const c2 = makeClient(errors);
  try {
    const h1 = openDoc(c1, doc, errors);
    const h2 = openDoc(c2, doc, errors);
    await within(Promise.all([h1.ready, h2.ready]), 10000, 'snapshots of two clients');
    assert.equal(h1.version, 0);
    assert.equal(h1.text, '');

    let edits = 0;
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      const h = rand() < 0.5 ? h1 : h2;
      h.edit(randomEdit(rand, h.text));
      edits++;
      await sleep(int(rand, 15));
    }
    await waitFor(
      () => h1.synced && h2.synced && h1.version === h2.version,
      () => describeHandles(h1, h2),
    );
    assert.equal(h1.text, h2.text);
    assert.ok(h1.version > 0 && h1.version <= edits, `${h1.version} versions for ${edits} edits`);

    const c3 = makeClient(errors);
    try {
      const h3 = openDoc(c3, doc, errors);
      await within(h3.ready, 10000, 'snapshot of a third client');
      assert.equal(h3.version, h1.version);
      assert.equal(h3.text, h1.text);
    } finally {
      c3.close();
    }
    assert.deepEqual(errors, []);
  } finally {
    c1.close();
    c2.close();
  }
});

test('unknown message type gets bad_request and the connection keeps working', { timeout: 30000 }, async () => {
  const conn = await rawConnection();
  try {
    conn.send({ type: 'hello', protocol: 1, client: randomClientId() });
    const welcome = await conn.next((m) => m.type === 'welcome', 'welcome');
    assert.equal(welcome.protocol, 1);

    conn.send({ type: 'frobnicate', doc: 'x' });
    const err = await conn.next((m) => m.type === 'error', 'error');
    assert.equal(err.code, 'bad_request');
    assert.equal(typeof err.message, 'string');
    assert.ok(err.message.length > 0);

    conn.send('this is not json');
    assert.equal((await conn.next((m) => m.type === 'error', 'error for a non-JSON frame')).code, 'bad_request');

    conn.send({ type: 'ping' });
    await conn.next((m) => m.type === 'pong', 'pong');
    const doc = `raw-${randomClientId()}`;
    conn.send({ type: 'open', doc });
    const snap = await conn.next((m) => m.type === 'snapshot', 'snapshot');
    assert.deepEqual([snap.doc, snap.version, snap.text], [doc, 0, '']);
    assert.equal(conn.closed, null, 'connection still open');
  } finally {
    conn.ws.close();
  }
});

test('a first frame other than hello gets bad_request and the connection is closed', { timeout: 30000 }, async () => {
  const conn = await rawConnection();
  conn.send({ type: 'ping' });
  const err = await conn.next((m) => m.type === 'error', 'error');
  assert.equal(err.code, 'bad_request');
  await waitFor(() => conn.closed !== null, () => 'connection not closed');
  assert.equal(conn.closed.code, 1008);
});

test('an invalid op gets invalid_op, uses its seq up, and the document keeps working', { timeout: 30000 }, async () => {
  const conn = await rawConnection();
  try {
    conn.send({ type: 'hello', protocol: 1, client: randomClientId() });
    await conn.next((m) => m.type === 'welcome', 'welcome');
    const doc = `invalid-${randomClientId()}`;
    conn.send({ type: 'open', doc });
    await conn.next((m) => m.type === 'snapshot', 'snapshot');
    conn.send({ type: 'op', doc, seq: 1, base: 0, op: [5, 'x'] }); // the text is empty: does not fit
    const err = await conn.next((m) => m.type === 'error', 'invalid_op');
    assert.equal(err.code, 'invalid_op');
    assert.equal(err.doc, doc);
    assert.equal(err.seq, 1);
    conn.send({ type: 'op', doc, seq: 2, base: 0, op: ['hi'] });
    const ack = await conn.next((m) => m.type === 'ack', 'ack');
    assert.deepEqual([ack.doc, ack.seq, ack.version], [doc, 2, 1]);
  } finally {
    conn.ws.close();
  }
});

test('a client whose socket is dropped mid-editing reconnects and no edit is lost', { timeout: 90000 }, async () => {
  const rand = rng(seedFor('server: reconnect'));
  const doc = `reconnect-${randomClientId()}`;
  const errors = [];
  const c1 = makeClient(errors);
  const c2 = makeClient(errors);
  const statuses = [];
  try {
    const h1 = c1.open(doc, { onError: (e) => errors.push(e), onStatus: (s) => statuses.push(s) });
    const h2 = openDoc(c2, doc, errors);
    await within(Promise.all([h1.ready, h2.ready]), 10000, 'snapshots of two clients');

    // Insert-only edits of unique markers at marker boundaries: at the end every marker must be in the
    // text exactly once (a lost edit is missing, an op applied twice shows up twice).
    const markers = [];
    const insertMarker = (h, name) => {
      const marker = `<${name}${markers.length}>`;
      markers.push(marker);
      const chars = Array.from(h.text);
      const bounds = [0];
      chars.forEach((ch, i) => ch === '>' && bounds.push(i + 1));
      const pos = bounds[int(rand, bounds.length)];
      h.edit([pos, marker, chars.length - pos]);
    };

    let drops = 0;
    const deadline = Date.now() + 4000;
    let nextDrop = Date.now() + 500;
    while (Date.now() < deadline) {
      insertMarker(rand() < 0.5 ? h1 : h2, rand() < 0.5 ? 'a' : 'b');
      if (Date.now() >= nextDrop && c1.socket) {
        c1.socket.close(); // force-close mid-editing; edits continue while it is offline
        drops++;
        nextDrop = Date.now() + 700 + int(rand, 500);
      }
      await sleep(int(rand, 12));
    }
    assert.ok(drops >= 2, `dropped ${drops} times`);
    await waitFor(
      () => h1.synced && h2.synced && h1.version === h2.version,
      () => describeHandles(h1, h2),
      30000,
    );
    assert.equal(h1.text, h2.text);
    for (const m of markers) {
      assert.equal(h1.text.split(m).length - 1, 1, `marker ${m} must appear exactly once in ${h1.text}`);
    }
    assert.equal(h1.text.length, markers.join('').length, 'the text is exactly the markers');
    assert.ok(statuses.includes('offline') && statuses.at(-1) === 'online', `statuses ${statuses}`);

    const c3 = makeClient(errors);
    try {
      const h3 = openDoc(c3, doc, errors);
      await within(h3.ready, 10000, 'snapshot of a third client');
      assert.equal(h3.text, h1.text);
      assert.equal(h3.version, h1.version);
    } finally {
      c3.close();
    }
    assert.deepEqual(errors, []);
    // Buffered edits are composed, so there may be fewer versions than edits, never more.
    assert.ok(h1.version <= markers.length, `${h1.version} versions for ${markers.length} edits`);
  } finally {
    c1.close();
    c2.close();
  }
});
