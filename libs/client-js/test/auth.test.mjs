// The JS client against a REAL server that requires tokens (HS256 with a secret made here): the
// subprotocol form of the token, per-document permissions, the `auth` refresh, and the session cookie
// endpoint. TANDEM_BIN must name the server binary (`make test` sets it).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { TandemClient } from '../tandem-client.js';
import { startServer } from './server-process.mjs';

let server = null;
let secret = null;

before(async () => {
  secret = randomBytes(32).toString('hex');
  const keyDir = (await import('node:fs')).mkdtempSync(join((await import('node:os')).tmpdir(), 'tandem-key-'));
  const keyFile = join(keyDir, 'jwt.secret');
  writeFileSync(keyFile, secret, { mode: 0o600 });
  server = await startServer(['--jwt-key-file', keyFile, '--jwt-leeway', '1']);
});

after(() => server?.stop());

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 token, as an identity provider would mint it. */
function token(user, { read = [], write = [], ttl = 3600 } = {}) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const now = Math.floor(Date.now() / 1000);
  const claims = b64url(JSON.stringify({ sub: user, exp: now + ttl, aud: 'tandem', iss: 'tandem', docs: { read, write } }));
  const signature = createHmac('sha256', secret).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond, describe, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out; ${describe()}\nserver output (tail):\n${server.output().slice(-2000)}`);
    await sleep(20);
  }
}

function client(tokenOrFn, errors) {
  return new TandemClient(server.wsUrl, {
    token: tokenOrFn,
    pingIntervalMs: 0,
    initialBackoffMs: 50,
    maxBackoffMs: 500,
    onError: (e) => errors.push(e),
  });
}

test('a token in the subprotocol opens the documents it allows, and only those', async () => {
  const errors = [];
  const alice = client(token('alice', { write: ['team-a/*'] }), errors);
  const doc = alice.open('team-a/js', { onError: (e) => errors.push(e) });
  await doc.ready;
  assert.equal(alice.user, 'alice');
  doc.replaceText('hello');
  await waitFor(() => doc.synced, () => `text ${doc.text}`);
  const other = alice.open('team-b/js', { onError: (e) => errors.push(e) });
  await waitFor(() => errors.some((e) => e.code === 'forbidden'), () => JSON.stringify(errors));
  await assert.rejects(other.ready, /may not read document team-b\/js/);
  alice.close();
});

test('a read-only user reads but cannot write, and its next edit reuses the unused seq', async () => {
  const writerErrors = [];
  const writer = client(token('writer', { write: ['shared/js'] }), writerErrors);
  const wdoc = writer.open('shared/js');
  await wdoc.ready;
  wdoc.replaceText('from the writer');
  await waitFor(() => wdoc.synced, () => 'writer sync');

  const errors = [];
  const reader = client(token('reader', { read: ['shared/js'] }), errors);
  const rdoc = reader.open('shared/js', { onError: (e) => errors.push(e) });
  await waitFor(() => rdoc.text === 'from the writer', () => `reader text ${JSON.stringify(rdoc.text)}`);
  await rdoc.ready;
  rdoc.replaceText('graffiti from the writer', 0);
  await waitFor(() => errors.some((e) => e.code === 'forbidden' && e.seq === 1), () => JSON.stringify(errors));
  // The reader reloads the document: its edit is gone, the writer's text is intact.
  await waitFor(() => rdoc.phase === 'ready' && rdoc.text === 'from the writer', () => `reader text ${JSON.stringify(rdoc.text)}`);
  assert.equal(rdoc.state.nextSeq, 1, 'the refused op did not use its seq up');
  wdoc.replaceText('> from the writer', 0);
  await waitFor(() => rdoc.text === '> from the writer', () => `reader text ${JSON.stringify(rdoc.text)}`);
  reader.close();
  writer.close();
});

test('auth renews the session before the token expires', async () => {
  const errors = [];
  const c = client(token('renewer', { write: ['renew/js'], ttl: 2 }), errors);
  const doc = c.open('renew/js');
  await doc.ready;
  c.auth(token('renewer', { write: ['renew/js'], ttl: 3600 }));
  await waitFor(() => c.tokenExpires > Date.now() / 1000 + 600, () => `expires ${c.tokenExpires}`);
  await sleep(4000); // past the first token's expiry and the 1 s leeway
  doc.replaceText('still here');
  await waitFor(() => doc.synced, () => `errors ${JSON.stringify(errors)}`);
  assert.equal(c.status, 'online');
  assert.deepEqual(errors, []);
  c.close();
});

test('POST /v1/session sets an HttpOnly cookie and never echoes the token', async () => {
  const t = token('cookie-user', { write: ['c/*'] });
  const response = await fetch(`${server.httpUrl}/v1/session`, { method: 'POST', headers: { authorization: `Bearer ${t}` } });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('cache-control'), 'no-store');
  const cookie = response.headers.get('set-cookie');
  assert.match(cookie, /^tandem_token=/);
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  assert.match(cookie, /; Secure/, 'Secure unless the server was told otherwise');
  const body = await response.json();
  assert.equal(body.user, 'cookie-user');
  assert.ok(!JSON.stringify(body).includes(t), 'the body does not carry the token');
  const refused = await fetch(`${server.httpUrl}/v1/session`, { method: 'POST', headers: { authorization: 'Bearer nope' } });
  assert.equal(refused.status, 401);
  const crossSite = await fetch(`${server.httpUrl}/v1/session`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t}`, origin: 'https://evil.example' },
  });
  assert.equal(crossSite.status, 403);
  assert.match(await crossSite.text(), /evil\.example/);
});
