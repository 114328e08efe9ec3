// End-to-end test of the distributed mode: the demo editor page served by gateway A and the one served
// by gateway B edit the same document, in headless Chromium.
//
// It tests a cluster that is already running (`make cluster`; `make cluster-browser-test` runs this file
// against it) and starts nothing itself:
//   TANDEM_URL_A  base URL of gateway A, e.g. http://127.0.0.1:8081
//   TANDEM_URL_B  base URL of gateway B, e.g. http://127.0.0.1:8082
// Chromium comes from Debian (CHROMIUM, default /usr/bin/chromium), launched with the same flags as
// demo.test.mjs; playwright-core only drives it and downloads nothing.
//
// Page A (on gateway A) and page B (on gateway B), in two browser contexts (two users), open the same
// fresh document; each page's WebSocket must go to its own gateway. A types a seed, which must appear on
// B; then both type at once (A at the start, B at the end), and both textareas must become equal and
// contain both pages' text, with the same version shown. Screenshots of both pages are left in a temp
// dir whose path is printed, also when the test fails.
//
// Presence and the offline state across gateways (presence-checks.mjs, the scenarios presence.test.mjs
// runs on one process): each page shows the other's caret on the right character after concurrent
// typing, and page A reloaded while offline delivers its edits exactly once through gateway A.
//
// `make test` runs this file against a cluster of its own (integration-tests/tests/browser_cluster.rs).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { launchChromium } from './harness.mjs';
import { checkCarets, checkOfflineReload, offlineNoise } from './presence-checks.mjs';
import { checkUndo } from './undo-check.mjs';

const WAIT_MS = 15000; // for any single condition on a page

/** The base URL in `name` (http://HOST:PORT, no path), or a clear failure. */
function baseUrlFrom(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: it must be the base URL of a gateway of a running cluster, e.g. ` +
        `${name}=http://127.0.0.1:${name.endsWith('A') ? 8081 : 8082} (make cluster starts one; ` +
        'make cluster-browser-test sets both)',
    );
  }
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`${name}=${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== 'http:') throw new Error(`${name}=${JSON.stringify(value)}: an http:// URL is needed`);
  return url.origin;
}

// Read when the file loads, so a missing variable fails before a browser starts.
const URL_A = baseUrlFrom('TANDEM_URL_A');
const URL_B = baseUrlFrom('TANDEM_URL_B');
assert.notEqual(URL_A, URL_B, 'TANDEM_URL_A and TANDEM_URL_B must name two different gateways');

let browser = null;

before(async () => {
  // A clear message when the cluster is not running, rather than a page that never comes online.
  for (const [name, url] of [['A', URL_A], ['B', URL_B]]) {
    try {
      const res = await fetch(`${url}/?doc=probe`);
      assert.ok(res.ok, `gateway ${name} (${url}) answers ${res.status}`);
    } catch (err) {
      throw new Error(`gateway ${name} at ${url} does not answer (${err.message}); start the cluster with make cluster`);
    }
  }
  browser = await launchChromium();
});

after(async () => {
  try {
    if (browser) await browser.close();
  } catch (err) {
    console.error(`closing the browser failed: ${err.message}`);
  }
});

// --- helpers -------------------------------------------------------------------------------------------

const cpLen = (s) => Array.from(s).length;

/** Opens the demo page of `baseUrl` for `doc` in a fresh browser context and watches errors and sockets. */
async function openEditor(name, baseUrl, doc) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.problems = [];
  page.sockets = [];
  page.on('pageerror', (err) => page.problems.push(`${name}: uncaught ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.problems.push(`${name}: console error: ${msg.text()}`);
  });
  page.on('websocket', (ws) => page.sockets.push(ws.url()));
  await page.goto(`${baseUrl}/?doc=${encodeURIComponent(doc)}`);
  await waitOnline(page, name);
  return page;
}

/** Waits until the page shows "online" and the textarea is enabled (the first snapshot is in). */
async function waitOnline(page, name) {
  try {
    await page.waitForFunction(() => {
      const status = document.getElementById('status');
      return (
        status.textContent === 'online' &&
        status.classList.contains('online') &&
        !document.getElementById('editor').disabled
      );
    });
  } catch (err) {
    const seen = { sockets: page.sockets, problems: page.problems };
    throw new Error(`${name} did not come online: ${JSON.stringify(await readPage(page))} ${JSON.stringify(seen)}\n${err.message}`);
  }
}

/** What a person sees: textarea value, status, version, character count and error line. */
function readPage(page) {
  return page.evaluate(() => ({
    text: document.getElementById('editor').value,
    status: document.getElementById('status').textContent,
    version: document.getElementById('version').textContent,
    chars: document.getElementById('chars').textContent,
    error: document.getElementById('error').textContent,
  }));
}

/** Types `text` key by key with a human-like delay. */
async function typeText(page, text) {
  await page.keyboard.type(text, { delay: 35 + Math.floor(Math.random() * 30) });
}

/** Polls both pages until `check(a, b)` holds for what they show; fails with both views otherwise. */
async function waitBoth(pageA, pageB, what, check, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let a;
  let b;
  for (;;) {
    [a, b] = await Promise.all([readPage(pageA), readPage(pageB)]);
    if (check(a, b)) return [a, b];
    if (Date.now() > deadline) {
      assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}:\nA: ${JSON.stringify(a)}\nB: ${JSON.stringify(b)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// --- the test ------------------------------------------------------------------------------------------

test('the demo page on gateway A and on gateway B edit the same document', { timeout: 60000 }, async () => {
  const doc = `cluster-e2e-${randomBytes(6).toString('hex')}`;
  console.log(`document ${doc}: page A on ${URL_A}, page B on ${URL_B}`);
  const [pageA, pageB] = await Promise.all([openEditor('A', URL_A, doc), openEditor('B', URL_B, doc)]);
  try {
    await editTogether(pageA, pageB, doc);
  } finally {
    // Also on failure: the pictures show what went wrong.
    const shots = mkdtempSync(join(tmpdir(), 'tandem-cluster-shots-'));
    await pageA.screenshot({ path: join(shots, 'gateway-a.png') }).catch(() => {});
    await pageB.screenshot({ path: join(shots, 'gateway-b.png') }).catch(() => {});
    console.log(`screenshots: ${shots}/gateway-a.png ${shots}/gateway-b.png`);
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems], [], 'errors on the pages');
});

async function editTogether(pageA, pageB, doc) {
  // Each page talks to the gateway that served it: the document really crosses gateways.
  for (const [name, page, base] of [['A', pageA, URL_A], ['B', pageB, URL_B]]) {
    const host = new URL(base).host;
    assert.ok(page.sockets.length > 0, `${name}: the page opened no WebSocket`);
    for (const url of page.sockets) {
      assert.equal(new URL(url).host, host, `${name}: WebSocket ${url} goes to another gateway than ${base}`);
    }
    const view = await readPage(page);
    assert.equal(view.text, '', `${name}: a fresh document is empty`);
    assert.equal(await page.locator('#doc').textContent(), doc, `${name}: the header names the document`);
  }

  // A seed typed on gateway A must show up on gateway B.
  const seed = '<seed from A>';
  await pageA.click('#editor');
  await typeText(pageA, seed);
  await waitBoth(pageA, pageB, 'the seed typed on A to appear on B', (a, b) => a.text === seed && b.text === seed);

  // Then both at once: A at the start, B at the end (with non-ASCII and an astral character).
  await pageB.click('#editor');
  await Promise.all([pageA.keyboard.press('Control+Home'), pageB.keyboard.press('Control+End')]);
  const textA = 'typed on gateway A é ';
  const textB = ' typed on gateway B ñ 👍';
  await Promise.all([typeText(pageA, textA), typeText(pageB, textB)]);

  const expected = `${textA}${seed}${textB}`;
  const [a, b] = await waitBoth(
    pageA,
    pageB,
    'both textareas to be equal, with both pages text, and the same version',
    (a, b) => a.text === b.text && a.text.includes(textA) && a.text.includes(textB) && a.version === b.version,
  );
  assert.equal(a.text, expected, 'the converged text');
  for (const [name, view] of [['A', a], ['B', b]]) {
    assert.equal(view.status, 'online', `${name}: status`);
    assert.ok(Number(view.version) > 0, `${name}: version shown is ${JSON.stringify(view.version)}`);
    assert.equal(view.chars, String(cpLen(expected)), `${name}: character count (code points)`);
    assert.equal(view.error, '', `${name}: error line`);
  }
  console.log(`converged at version ${a.version} on both gateways: ${JSON.stringify(a.text)}`);
}

// --- presence and offline across gateways --------------------------------------------------------------

function screenshots(pageA, pageB, prefix) {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-cluster-shots-'));
  console.log(`screenshots in ${dir}`);
  return async (name) => {
    await pageA.screenshot({ path: join(dir, `${prefix}-${name}-gateway-a.png`) }).catch(() => {});
    await pageB.screenshot({ path: join(dir, `${prefix}-${name}-gateway-b.png`) }).catch(() => {});
  };
}

test("each page shows the other's caret on the right character, across gateways", { timeout: 60000 }, async () => {
  const doc = `cluster-presence-${randomBytes(6).toString('hex')}`;
  console.log(`document ${doc}: page A on ${URL_A}, page B on ${URL_B}`);
  const [pageA, pageB] = await Promise.all([openEditor('A', URL_A, doc), openEditor('B', URL_B, doc)]);
  const shots = screenshots(pageA, pageB, 'presence');
  try {
    await checkCarets(pageA, pageB);
  } finally {
    await shots('carets');
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems], [], 'errors on the pages');
});

test('a page on gateway A reloaded while offline delivers its edits once, across gateways', { timeout: 90000 }, async () => {
  const doc = `cluster-offline-${randomBytes(6).toString('hex')}`;
  console.log(`document ${doc}: page A on ${URL_A}, page B on ${URL_B}`);
  const [pageA, pageB] = await Promise.all([openEditor('A', URL_A, doc), openEditor('B', URL_B, doc)]);
  const shots = screenshots(pageA, pageB, 'offline');
  try {
    await checkOfflineReload(pageA, pageB, shots);
  } catch (err) {
    await shots('failed');
    throw err;
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems].filter((p) => !offlineNoise(p)), [], 'errors on the pages');
});

test('undo on the page on gateway A reverts only its own edit while the page on gateway B keeps typing', { timeout: 60000 }, async () => {
  const doc = `cluster-undo-${randomBytes(6).toString('hex')}`;
  console.log(`document ${doc}: page A on ${URL_A}, page B on ${URL_B}`);
  const [pageA, pageB] = await Promise.all([openEditor('A', URL_A, doc), openEditor('B', URL_B, doc)]);
  const shots = screenshots(pageA, pageB, 'undo');
  try {
    await checkUndo(pageA, pageB);
  } finally {
    await shots('after-redo');
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems], [], 'errors on the pages');
});
