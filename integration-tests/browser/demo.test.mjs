// End-to-end test of the demo editor page (libs/client-js/demo/index.html) in headless Chromium.
//
// TANDEM_BIN must name the server binary (`make browser-tests` sets it). The server is started as
//   $TANDEM_BIN --listen 127.0.0.1:0 --data-dir <fresh temp dir>
// and must print a line containing `listening on http://127.0.0.1:PORT/` on stdout once ready.
// Chromium comes from Debian (CHROMIUM, default /usr/bin/chromium; deploy/install-browser-test-deps.sh
// installs it); playwright-core only drives it and downloads nothing.
//
// Two pages, in two browser contexts (two users), open the same fresh document, type into the textarea
// at the same time at different caret positions (with Backspace, non-ASCII and astral characters), and
// must converge to the same, exactly predictable text, showing "online" and the same version. Then one
// page is reloaded and must show the same text and version again, from the server's snapshot.
// Screenshots of both pages are left in a temp dir whose path is printed. A second test has one page
// undo its own typing run (Ctrl+Z) while the other types on, then redo it (the Redo button).
//
// The page and client are compiled into the binary (services/gateway/src/demo.rs), so a change to them
// needs a rebuild. To try one without rebuilding, set TANDEM_DEMO_DIR=../../libs/client-js: the browser
// then gets demo/index.html, tandem-client.js and ot.js from that directory instead of from the server.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 15000; // for any single condition on a page
const DEMO_DIR = process.env.TANDEM_DEMO_DIR ? resolve(process.env.TANDEM_DEMO_DIR) : null;

let server = null;
let serverOutput = '';
let dataDir = null;
let browser = null;
let baseUrl = null;

function killServer() {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
}
process.on('exit', killServer);

async function startServer() {
  const bin = process.env.TANDEM_BIN;
  assert.ok(
    bin,
    'TANDEM_BIN is not set: it must name the Tandem server binary, e.g. ' +
      'TANDEM_BIN=$HOME/.cache/tandem/target/debug/tandem-standalone (make browser-tests sets it)',
  );
  dataDir = mkdtempSync(join(tmpdir(), 'tandem-browser-data-'));
  server = spawn(bin, ['--listen', '127.0.0.1:0', '--data-dir', dataDir, '--insecure-no-auth'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`server did not print "listening on http://..." within 20 s; output:\n${serverOutput}`)),
      20000,
    );
    server.stdout.on('data', (chunk) => {
      serverOutput += chunk.toString();
      // eslint-disable-next-line no-control-regex
      const m = serverOutput.replace(/\x1b\[[0-9;]*m/g, '').match(/listening on (http:\/\/127\.0\.0\.1:\d+)\//);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    server.stderr.on('data', (chunk) => {
      serverOutput += chunk.toString();
    });
    server.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${err.message}`));
    });
    server.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (code ${code}, signal ${signal}); output:\n${serverOutput}`));
    });
  });
}

before(async () => {
  baseUrl = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // A page answered by the test (TANDEM_DEMO_DIR) has no loopback address of its own, so Chromium's
      // Local Network Access checks would block its WebSocket to 127.0.0.1.
      ...(DEMO_DIR ? ['--disable-features=LocalNetworkAccessChecks,LocalNetworkAccessChecksWebSockets'] : []),
    ],
  });
});

after(async () => {
  try {
    if (browser) await browser.close();
  } catch (err) {
    console.error(`closing the browser failed: ${err.message}`);
  } finally {
    killServer();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
});

// --- helpers -------------------------------------------------------------------------------------------

const cpLen = (s) => Array.from(s).length;

/** Opens the demo page for `doc` in a fresh browser context (its own client id) and watches for errors. */
async function openEditor(name, doc) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  if (DEMO_DIR) await serveDemoFromSource(context);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.problems = [];
  page.on('pageerror', (err) => page.problems.push(`${name}: uncaught ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.problems.push(`${name}: console error: ${msg.text()}`);
  });
  await page.goto(`${baseUrl}/?doc=${encodeURIComponent(doc)}`);
  await waitOnline(page, name);
  return page;
}

/** Answers the page and its scripts from DEMO_DIR (the working tree) instead of the server binary. */
async function serveDemoFromSource(context) {
  const files = {
    '/': ['demo/index.html', 'text/html; charset=utf-8'],
    '/tandem-client.js': ['tandem-client.js', 'text/javascript; charset=utf-8'],
    '/ot.js': ['ot.js', 'text/javascript; charset=utf-8'],
  };
  await context.route(
    (url) => url.origin === baseUrl && url.pathname in files,
    (route) => {
      const [file, contentType] = files[new URL(route.request().url()).pathname];
      return route.fulfill({ body: readFileSync(join(DEMO_DIR, file)), contentType });
    },
  );
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
    throw new Error(`${name} did not come online: ${JSON.stringify(await readPage(page))}\n${err.message}`);
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

/** Types `steps` in order: strings are typed key by key, {press, times} presses a key. */
async function typeSteps(page, steps) {
  for (const step of steps) {
    if (typeof step === 'string') {
      await page.keyboard.type(step, { delay: 35 + Math.floor(Math.random() * 30) });
    } else {
      for (let i = 0; i < (step.times ?? 1); i++) {
        await page.keyboard.press(step.press, { delay: 10 });
        await page.waitForTimeout(25);
      }
    }
  }
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

test('two pages type concurrently into the demo editor and converge; a reload shows the same text', { timeout: 50000 }, async () => {
  const doc = `e2e-${randomBytes(6).toString('hex')}`;
  console.log(`document ${doc} on ${baseUrl}${DEMO_DIR ? `; page and client from ${DEMO_DIR}` : ''}`);
  const [pageA, pageB] = await Promise.all([openEditor('A', doc), openEditor('B', doc)]);
  try {
    await typeConvergeReload(pageA, pageB, doc);
  } finally {
    // Also on failure: the pictures show what went wrong.
    const shots = mkdtempSync(join(tmpdir(), 'tandem-browser-shots-'));
    await pageA.screenshot({ path: join(shots, 'page-a.png') }).catch(() => {});
    await pageB.screenshot({ path: join(shots, 'page-b.png') }).catch(() => {});
    console.log(`screenshots: ${shots}/page-a.png ${shots}/page-b.png`);
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems], [], 'errors on the pages');
});

async function typeConvergeReload(pageA, pageB, doc) {
  for (const [name, page] of [['A', pageA], ['B', pageB]]) {
    const view = await readPage(page);
    assert.equal(view.text, '', `${name}: a fresh document is empty`);
    assert.equal(view.status, 'online', `${name}: status`);
    assert.equal(await page.locator('#doc').textContent(), doc, `${name}: the header names the document`);
  }

  // A seed text, so that "start" and "end" are different places.
  const seed = '<seed:left|right>';
  await pageA.click('#editor');
  await typeSteps(pageA, [seed]);
  await waitBoth(pageA, pageB, 'the seed on both pages', (a, b) => a.text === seed && b.text === seed);

  // Concurrently: A types at the start, B at the end and then in the middle of the seed (its caret must
  // stay put while A's edits arrive), both with Backspace and non-ASCII / astral characters.
  await pageB.click('#editor');
  await Promise.all([pageA.keyboard.press('Control+Home'), pageB.keyboard.press('Control+End')]);
  const chunkA = 'Alpha é 😀 A-done ';
  const chunkB = ' Bravo ñ 👍 B-end';
  await Promise.all([
    typeSteps(pageA, ['Alpha é ', 'zz', { press: 'Backspace', times: 2 }, '😀 A-', 'x', { press: 'Backspace' }, 'done ']),
    typeSteps(pageB, [
      ' Bravo ñ',
      'qqq',
      { press: 'Backspace', times: 3 },
      ' 👍 B-end',
      // back over " Bravo ñ 👍 B-end" and "right>" to just after "|" in the seed
      { press: 'ArrowLeft', times: cpLen(chunkB) + cpLen('right>') },
      'MID',
    ]),
  ]);

  const expected = `${chunkA}<seed:left|MIDright>${chunkB}`;
  await waitBoth(pageA, pageB, 'both textareas to converge', (a, b) => a.text === expected && b.text === expected);
  const [a, b] = await waitBoth(
    pageA,
    pageB,
    'the same version on both pages (the textareas agree; does a page miss the ack of its own last edit?)',
    (a, b) => a.text === expected && b.text === expected && a.version === b.version,
    5000,
  );
  for (const chunk of [chunkA, chunkB, '<seed:left|MIDright>']) {
    assert.ok(a.text.includes(chunk), `converged text ${JSON.stringify(a.text)} lacks ${JSON.stringify(chunk)}`);
  }
  for (const [name, view] of [['A', a], ['B', b]]) {
    assert.equal(view.status, 'online', `${name}: status`);
    assert.ok(Number(view.version) > 0, `${name}: version shown is ${JSON.stringify(view.version)}`);
    assert.equal(view.chars, String(cpLen(expected)), `${name}: character count (code points)`);
    assert.equal(view.error, '', `${name}: error line`);
  }
  console.log(`converged at version ${a.version}: ${JSON.stringify(a.text)}`);

  // Reload B: the text comes back from the server's snapshot, with the same version.
  await pageB.reload();
  await waitOnline(pageB, 'B after reload');
  const [a2, b2] = await waitBoth(pageA, pageB, 'the reloaded page to show the same text and version', (a, b) =>
    a.text === expected && b.text === expected && a.version === b.version,
  );
  assert.equal(b2.version, a.version, 'the version after reload is the converged version');
  assert.equal(b2.chars, String(cpLen(expected)), 'B after reload: character count');
  assert.equal(a2.error + b2.error, '', 'error lines');
}

// Undo and redo revert this page's own edits only (libs/client-js/README.md, "Undo and redo"): A's
// typing run is one undo step; undoing it while B keeps typing removes A's text and nothing of B's,
// on both pages; Redo puts it back.
test('undo on one page reverts only its own edit while the other page keeps typing', { timeout: 50000 }, async () => {
  const doc = `e2e-undo-${randomBytes(6).toString('hex')}`;
  const [pageA, pageB] = await Promise.all([openEditor('A', doc), openEditor('B', doc)]);
  try {
    await pageA.click('#editor');
    await typeSteps(pageA, ['aé😀a']);
    await waitBoth(pageA, pageB, "A's text on both pages", (a, b) => a.text === 'aé😀a' && b.text === 'aé😀a');
    await pageB.click('#editor');
    await pageB.keyboard.press('Control+End');
    await typeSteps(pageB, ['BBB']);
    await waitBoth(pageA, pageB, "B's text after A's", (a, b) => a.text === 'aé😀aBBB' && b.text === 'aé😀aBBB');
    assert.equal(await pageA.locator('#undo').isDisabled(), false, 'A can undo');

    // A undoes (Ctrl+Z) while B types on at the end.
    await Promise.all([pageA.keyboard.press('Control+z'), typeSteps(pageB, ['ccc'])]);
    await waitBoth(pageA, pageB, "A's run undone, B's text kept", (a, b) => a.text === 'BBBccc' && b.text === 'BBBccc');
    assert.equal(await pageA.locator('#redo').isDisabled(), false, 'A can redo');

    await pageA.click('#redo');
    await waitBoth(pageA, pageB, "A's run back after Redo", (a, b) => a.text === 'aé😀aBBBccc' && b.text === 'aé😀aBBBccc');
    const [a, b] = await waitBoth(pageA, pageB, 'one version on both pages', (a, b) => a.version === b.version, 5000);
    assert.equal(a.error + b.error, '', 'error lines');
  } finally {
    const shots = mkdtempSync(join(tmpdir(), 'tandem-browser-shots-'));
    await pageA.screenshot({ path: join(shots, 'undo-a.png') }).catch(() => {});
    await pageB.screenshot({ path: join(shots, 'undo-b.png') }).catch(() => {});
    console.log(`screenshots: ${shots}/undo-a.png ${shots}/undo-b.png`);
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems], [], 'errors on the pages');
});
