// Presence through a REAL single-process server (TANDEM_BIN, see server-process.mjs): two TandemClients
// type concurrently while each shows the other's caret; the caret stays on its character in both texts,
// a refused selection does not reload the document, and a closed document's presence disappears.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { TandemClient, randomClientId } from '../tandem-client.js';
import { startServer } from './server-process.mjs';

let server = null;
before(async () => {
  server = await startServer(['--insecure-no-auth']);
});
after(() => server?.stop());

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond, describe, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out; ${describe()}\nserver output (tail):\n${server.output().slice(-2000)}`);
    await sleep(10);
  }
}

function client(errors) {
  return new TandemClient(server.wsUrl, { WebSocket: globalThis.WebSocket, pingIntervalMs: 0, onError: (e) => errors.push(e) });
}

/** The other participant as `handle` shows it. */
const other = (handle) => handle.presences()[0];
const cps = (text) => Array.from(text);

test('each client shows the other caret on its character while both type', { timeout: 30000 }, async () => {
  const doc = `presence-${randomClientId()}`;
  const errors = [];
  const [a, b] = [client(errors), client(errors)];
  try {
    const seen = { a: 0, b: 0 };
    const ha = a.open(doc, { onPresence: () => seen.a++, onError: (e) => errors.push(e) });
    const hb = b.open(doc, { onPresence: () => seen.b++, onError: (e) => errors.push(e) });
    await Promise.all([ha.ready, hb.ready]);
    ha.edit(['hello 🌍 world']);
    await waitFor(() => hb.text === 'hello 🌍 world' && ha.synced, () => `${ha.text} / ${hb.text}`);
    // Ann's caret before "w", Bob's before "🌍" (code points: 8 and 6).
    ha.setSelection(8, 8, { name: 'Ann', colour: '#e06c75' });
    hb.setSelection(6, 6, { name: 'Bob', colour: '#61afef' });
    await waitFor(() => other(hb)?.head === 8 && other(ha)?.head === 6, () => JSON.stringify([ha.presences(), hb.presences()]));
    assert.equal(other(hb).name, 'Ann');
    assert.equal(other(hb).user, 'anonymous');
    assert.equal(other(hb).client, a.author);
    // Both type before the other's caret at once, several times, without waiting for each other.
    for (let i = 0; i < 5; i++) {
      ha.edit(['A', cps(ha.text).length]);
      hb.edit([2, 'B', cps(hb.text).length - 2]);
      // Each view at once, pending edits included: the carets stay on their characters.
      assert.equal(cps(ha.text)[other(ha).head], '🌍', `ann's view: ${ha.text} ${JSON.stringify(other(ha))}`);
      assert.equal(cps(hb.text)[other(hb).head], 'w', `bob's view: ${hb.text} ${JSON.stringify(other(hb))}`);
      await sleep(5);
    }
    await waitFor(() => ha.synced && hb.synced && ha.text === hb.text, () => `${ha.text} / ${hb.text}`);
    assert.equal(cps(ha.text)[other(ha).head], '🌍');
    assert.equal(cps(hb.text)[other(hb).head], 'w');
    assert.ok(seen.a > 0 && seen.b > 0);
    assert.deepEqual(errors, []);
    // Bob leaves: Ann sees nobody.
    hb.close();
    await waitFor(() => ha.presences().length === 0, () => JSON.stringify(ha.presences()));
  } finally {
    a.close();
    b.close();
  }
});

test('a refused selection is reported and nothing else happens', { timeout: 20000 }, async () => {
  const doc = `presence-${randomClientId()}`;
  const errors = [];
  const a = client(errors);
  try {
    const ha = a.open(doc, { onPresence: () => {}, onError: (e) => errors.push(e) });
    await ha.ready;
    ha.edit(['abc']);
    await waitFor(() => ha.synced, () => ha.text);
    // Past the text, which setSelection itself refuses...
    assert.throws(() => ha.setSelection(4), /outside the text \(0 to 3 code points\)/);
    // ...and a raw presence naming a version the server cannot check.
    a._send({ type: 'presence', doc, version: 99, anchor: 0, head: 0 });
    await waitFor(() => errors.length > 0, () => 'no error');
    assert.equal(errors[0].code, 'bad_request');
    assert.match(errors[0].message, /document is at version 1/);
    ha.edit([3, 'd']);
    await waitFor(() => ha.synced && ha.phase === 'ready', () => `${ha.phase} ${ha.text}`);
    assert.equal(ha.version, 2, 'the document was not reloaded');
  } finally {
    a.close();
  }
});
