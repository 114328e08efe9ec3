// Tests of TandemClient's protocol handling against a scripted fake WebSocket: handshake, ordering of
// sends, reconnect with `since` and resubmission, invalid_op recovery. No network involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TandemClient, transformIndex } from '../tandem-client.js';

/** A WebSocket stand-in: records what the client sends; the test plays the server. */
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(data) {
    assert.equal(this.readyState, 1, 'send on a socket that is not open');
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code }));
  }
  // --- server side ---
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const latest = () => FakeSocket.all.at(-1);

async function waitSocket(count) {
  for (let i = 0; i < 200 && FakeSocket.all.length < count; i++) await sleep(5);
  assert.equal(FakeSocket.all.length, count, 'client did not reconnect');
  return latest();
}

function newClient(extra = {}) {
  FakeSocket.all = [];
  const statuses = [];
  const client = new TandemClient('ws://test/v1/ws', {
    WebSocket: FakeSocket,
    clientId: 'me',
    pingIntervalMs: 0,
    initialBackoffMs: 1,
    maxBackoffMs: 5,
    onStatus: (s) => statuses.push(s),
    ...extra,
  });
  return { client, statuses, ws: latest() };
}

function welcome(ws) {
  ws.accept();
  assert.deepEqual(ws.take(), [{ type: 'hello', protocol: 1, client: 'me' }]);
  ws.recv({ type: 'welcome', protocol: 1, client: 'me', user: 'u' });
}

test('hello first, open after welcome, snapshot, one op in flight, buffer sent on ack', async () => {
  const { client, statuses, ws } = newClient();
  const changes = [];
  const h = client.open('doc', { onChange: (c) => changes.push(c) });
  assert.throws(() => h.edit(['x']), /not loaded/);
  welcome(ws);
  assert.equal(client.status, 'online');
  assert.deepEqual(statuses, ['online'], 'the initial status is connecting');
  assert.deepEqual(ws.take(), [{ type: 'open', doc: 'doc' }]);
  ws.recv({ type: 'snapshot', doc: 'doc', version: 7, text: 'héllo' });
  assert.equal(await h.ready, h);
  assert.deepEqual(changes, [{ op: ['héllo'], text: 'héllo', version: 7, reset: true }]);
  assert.equal(h.status, 'online');

  h.edit([5, '!']);
  h.replaceText('héllo!?');
  h.replaceText('héllo!?'); // no change: nothing happens
  assert.deepEqual(ws.take(), [{ type: 'op', doc: 'doc', seq: 1, base: 7, op: [5, '!'] }]);
  assert.ok(!h.synced);
  const synced = h.whenSynced();

  ws.recv({ type: 'op', doc: 'doc', version: 8, client: 'other', op: ['>', 5] });
  assert.equal(h.text, '>héllo!?');
  assert.deepEqual(changes.at(-1), { op: ['>', 7], text: '>héllo!?', version: 8, client: 'other' });
  // The page moves its caret with the op: a caret after "!" stays after "!".
  assert.equal(transformIndex(changes.at(-1).op, 6), 7);

  ws.recv({ type: 'ack', doc: 'doc', seq: 1, version: 9 });
  assert.deepEqual(ws.take(), [{ type: 'op', doc: 'doc', seq: 2, base: 9, op: [7, '?'] }]);
  ws.recv({ type: 'ack', doc: 'doc', seq: 2, version: 10 });
  await synced;
  assert.equal(h.version, 10);
  client.close();
  assert.deepEqual(ws.take(), [{ type: 'close', doc: 'doc' }]);
});

test('a token is sent as the tandem.v1 + tandem.bearer subprotocols', () => {
  const { client, ws } = newClient({ token: () => 'abc.def' });
  assert.deepEqual(ws.protocols, ['tandem.v1', 'tandem.bearer.abc.def']);
  client.close();
});

test('reconnect: same client id, open with since, catch-up, resend with the same seq, base and op', async () => {
  const { client, statuses, ws } = newClient();
  const changes = [];
  const docStatus = [];
  const h = client.open('doc', { onChange: (c) => changes.push(c), onStatus: (s) => docStatus.push(s) });
  welcome(ws);
  ws.take();
  ws.recv({ type: 'snapshot', doc: 'doc', version: 3, text: 'ab' });
  h.edit([1, 'X', 1]);
  const [sent] = ws.take();
  assert.deepEqual(sent, { type: 'op', doc: 'doc', seq: 1, base: 3, op: [1, 'X', 1] });

  ws.close(1006); // the connection drops
  await sleep(0);
  assert.equal(client.status, 'offline');
  assert.equal(h.status, 'offline');
  h.edit([3, 'Y']); // edits offline go into the buffer

  const ws2 = await waitSocket(2);
  ws2.accept();
  assert.deepEqual(ws2.take(), [{ type: 'hello', protocol: 1, client: 'me' }]);
  ws2.recv({ type: 'welcome', protocol: 1, client: 'me', user: 'u' });
  assert.deepEqual(ws2.take(), [{ type: 'open', doc: 'doc', since: 3 }]);
  ws2.recv({ type: 'op', doc: 'doc', version: 4, client: 'other', op: [1, 'Z', 1] });
  assert.equal(h.text, 'aXZbY');
  assert.deepEqual(ws2.take(), [], 'nothing is sent during catch-up');
  ws2.recv({ type: 'opened', doc: 'doc', version: 4 });
  assert.deepEqual(ws2.take(), [sent], 'the in-flight op is resent exactly as first sent');
  ws2.recv({ type: 'ack', doc: 'doc', seq: 1, version: 5 });
  assert.deepEqual(ws2.take(), [{ type: 'op', doc: 'doc', seq: 2, base: 5, op: [4, 'Y'] }]);
  assert.deepEqual(statuses, ['online', 'offline', 'connecting', 'online']);
  assert.deepEqual(docStatus, ['online', 'offline', 'connecting', 'online']);
  client.close();
});

test('reconnect: an op acknowledged in the catch-up is not resent; the buffer goes out after opened', async () => {
  const { client, ws } = newClient();
  const h = client.open('doc');
  welcome(ws);
  ws.take();
  ws.recv({ type: 'snapshot', doc: 'doc', version: 0, text: '' });
  h.edit(['a']);
  ws.take();
  ws.close(4408);
  await sleep(0);
  h.edit([1, 'b']);
  const ws2 = await waitSocket(2);
  welcome(ws2);
  assert.deepEqual(ws2.take(), [{ type: 'open', doc: 'doc', since: 0 }]);
  ws2.recv({ type: 'ack', doc: 'doc', seq: 1, version: 1 });
  assert.deepEqual(ws2.take(), [], 'the buffer waits for opened');
  ws2.recv({ type: 'opened', doc: 'doc', version: 1 });
  assert.deepEqual(ws2.take(), [{ type: 'op', doc: 'doc', seq: 2, base: 1, op: [1, 'b'] }]);
  client.close();
});

test('reconnect past the catch-up limit: snapshot then opened; pending edits dropped, not resent; seq continues', async () => {
  const { client, ws } = newClient();
  const errors = [];
  const changes = [];
  const h = client.open('doc', { onError: (e) => errors.push(e), onChange: (c) => changes.push(c) });
  welcome(ws);
  ws.take();
  ws.recv({ type: 'snapshot', doc: 'doc', version: 3, text: 'ab' });
  h.edit([1, 'X', 1]);
  ws.take();
  ws.close(1006);
  await sleep(0);
  h.edit([3, 'Y']); // buffered offline
  const ws2 = await waitSocket(2);
  welcome(ws2);
  assert.deepEqual(ws2.take(), [{ type: 'open', doc: 'doc', since: 3 }]);
  // PROTOCOL.md, "Reconnect": too far behind, the server answers with the whole document.
  ws2.recv({ type: 'snapshot', doc: 'doc', version: 20000, text: 'aXb and more' });
  ws2.recv({ type: 'opened', doc: 'doc', version: 20000 });
  assert.deepEqual(errors, [], 'no protocol violation, no reload');
  assert.equal(h.text, 'aXb and more');
  assert.equal(h.version, 20000);
  assert.equal(changes.at(-1).reset, true);
  assert.deepEqual(ws2.take(), [], 'the dropped edits are not resent');
  h.edit([12, '!']);
  assert.deepEqual(ws2.take(), [{ type: 'op', doc: 'doc', seq: 2, base: 20000, op: [12, '!'] }], 'seq continues');
  client.close();
});

test('invalid_op: pending edits dropped, close + fresh open, stale messages ignored, seq continues', async () => {
  const { client, ws } = newClient();
  const changes = [];
  const errors = [];
  const h = client.open('doc', { onChange: (c) => changes.push(c), onError: (e) => errors.push(e) });
  welcome(ws);
  ws.take();
  ws.recv({ type: 'snapshot', doc: 'doc', version: 2, text: 'abc' });
  h.edit([3, 'd']);
  h.edit([4, 'e']);
  ws.take();
  ws.recv({ type: 'error', code: 'invalid_op', message: 'nope', doc: 'doc', seq: 1 });
  assert.equal(errors[0].code, 'invalid_op');
  assert.deepEqual(ws.take(), [
    { type: 'close', doc: 'doc' },
    { type: 'open', doc: 'doc' },
  ]);
  h.edit([0, 'z', 5]); // while reloading: applied locally, never sent
  ws.recv({ type: 'op', doc: 'doc', version: 3, client: 'o', op: [3, '?'] }); // old subscription: ignored
  ws.recv({ type: 'snapshot', doc: 'doc', version: 3, text: 'abc?' });
  assert.equal(h.text, 'abc?');
  assert.equal(h.version, 3);
  // The snapshot replaces the local 'zabcde'; the change carries the diff for the caret.
  assert.deepEqual(changes.at(-1), { op: ['abc?', -6], text: 'abc?', version: 3, reset: true });
  assert.deepEqual(ws.take(), []);
  h.edit([4, '!']);
  assert.deepEqual(ws.take(), [{ type: 'op', doc: 'doc', seq: 2, base: 3, op: [4, '!'] }]);
  client.close();
});

test('closing and reopening a document continues its seq', async () => {
  const { client, ws } = newClient();
  let h = client.open('doc');
  welcome(ws);
  ws.take();
  ws.recv({ type: 'snapshot', doc: 'doc', version: 0, text: '' });
  h.edit(['a']);
  ws.recv({ type: 'ack', doc: 'doc', seq: 1, version: 1 });
  h.close();
  assert.throws(() => h.edit([1, 'x']), /closed/);
  h = client.open('doc');
  assert.deepEqual(ws.take().slice(-2), [{ type: 'close', doc: 'doc' }, { type: 'open', doc: 'doc' }]);
  ws.recv({ type: 'snapshot', doc: 'doc', version: 1, text: 'a' });
  h.edit([1, 'b']);
  assert.equal(ws.take()[0].seq, 2);
  client.close();
});

test('rate_limited: the in-flight op is resent unchanged later', async () => {
  const { client, ws } = newClient();
  const h = client.open('doc', { onError: () => {} });
  welcome(ws);
  ws.take();
  ws.recv({ type: 'snapshot', doc: 'doc', version: 0, text: '' });
  h.edit(['a']);
  const [sent] = ws.take();
  ws.recv({ type: 'error', code: 'rate_limited', message: 'slow down', doc: 'doc', seq: 1 });
  await sleep(1100);
  assert.deepEqual(ws.take(), [sent]);
  client.close();
});

test('bad ids are refused up front; a refused open fails the document instead of retrying', async () => {
  assert.throws(() => new TandemClient('ws://x', { WebSocket: FakeSocket, clientId: 'no spaces' }), /client id/);
  const { client, ws } = newClient();
  assert.throws(() => client.open('bad id'), /document id/);
  assert.throws(() => client.open(''), /document id/);
  const errors = [];
  const h = client.open('secret', { onError: (e) => errors.push(e) });
  welcome(ws);
  ws.take();
  ws.recv({ type: 'error', code: 'forbidden', message: 'no read access', doc: 'secret' });
  await assert.rejects(h.ready, { code: 'forbidden' });
  assert.equal(h.status, 'offline');
  assert.deepEqual(ws.take(), []);
  assert.equal(errors.length, 1);
  client.close();
});

test('undo and redo on the handle are sent like edits and keep the text of others', async () => {
  const { client, ws } = newClient({ undo: { windowMs: 1000 } });
  const h = client.open('doc');
  assert.equal(h.undo(), null, 'nothing to undo before the snapshot');
  welcome(ws);
  ws.take();
  ws.recv({ type: 'snapshot', doc: 'doc', version: 0, text: '' });
  await h.ready;
  h.edit(['hello']);
  ws.recv({ type: 'ack', doc: 'doc', seq: 1, version: 1 });
  ws.recv({ type: 'op', doc: 'doc', version: 2, client: 'other', op: [2, 'X', 3] });
  assert.ok(h.canUndo() && !h.canRedo());
  assert.deepEqual(h.undo(), [-2, 1, -3]);
  assert.equal(h.text, 'X');
  assert.ok(!h.canUndo() && h.canRedo());
  ws.recv({ type: 'ack', doc: 'doc', seq: 2, version: 3 });
  assert.deepEqual(h.redo(), ['he', 1, 'llo']);
  assert.equal(h.text, 'heXllo');
  assert.deepEqual(ws.take(), [
    { type: 'op', doc: 'doc', seq: 1, base: 0, op: ['hello'] },
    { type: 'op', doc: 'doc', seq: 2, base: 2, op: [-2, 1, -3] },
    { type: 'op', doc: 'doc', seq: 3, base: 3, op: ['he', 1, 'llo'] },
  ]);
  // A snapshot that replaces the text (here after invalid_op) clears the history.
  ws.recv({ type: 'error', code: 'invalid_op', message: 'no', doc: 'doc', seq: 3 });
  ws.recv({ type: 'snapshot', doc: 'doc', version: 3, text: 'X' });
  assert.ok(!h.canUndo() && !h.canRedo());
  h.close();
  assert.throws(() => h.undo(), /closed/);
  client.close();
});
