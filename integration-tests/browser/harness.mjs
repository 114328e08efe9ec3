// What the browser tests share (demo.test.mjs, history.test.mjs): the Tandem server and headless
// Chromium, started once per test file by `useServerAndBrowser()`, and helpers that open the demo page
// and read what it shows.
//
// TANDEM_BIN must name the server binary (`make browser-tests` sets it). The server is started as
//   $TANDEM_BIN --listen 127.0.0.1:0 --data-dir <fresh temp dir> --insecure-no-auth
// and must print a line containing `listening on http://127.0.0.1:PORT/` on stdout once ready.
// Chromium comes from Debian (CHROMIUM, default /usr/bin/chromium; deploy/install-browser-test-deps.sh
// installs it); playwright-core only drives it and downloads nothing.
//
// The page and client are compiled into the binary (services/gateway/src/demo.rs), so a change to them
// needs a rebuild. To try one without rebuilding, set TANDEM_DEMO_DIR=../../libs/client-js: the browser
// then gets demo/index.html, demo/history.js, demo/presence-view.js, demo/sw.js, tandem-client.js,
// offline.js, presence.js and ot.js from that directory instead of from the server (a service worker's
// own requests are not routed by Playwright: its cache then holds the server's copies).

import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const WAIT_MS = 15000; // for any single condition on a page
export const DEMO_DIR = process.env.TANDEM_DEMO_DIR ? resolve(process.env.TANDEM_DEMO_DIR) : null;

let server = null;
let serverOutput = '';
let dataDir = null;
/** The browser and the server's `http://127.0.0.1:PORT`, once `useServerAndBrowser`'s hook ran. */
export let browser = null;
export let baseUrl = null;

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

/** Headless Chromium (Debian's, or CHROMIUM) as every browser test here runs it. */
export function launchChromium() {
  return chromium.launch({
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
}

/** Starts the server and the browser before the file's tests, and stops them after. */
export function useServerAndBrowser() {
  before(async () => {
    baseUrl = await startServer();
    browser = await launchChromium();
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
}

// --- helpers -------------------------------------------------------------------------------------------

export const cpLen = (s) => Array.from(s).length;

/** Opens the demo page for `doc` in a fresh browser context (its own client id) and watches for errors. */
export async function openEditor(name, doc) {
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
export async function serveDemoFromSource(context) {
  const files = {
    '/': ['demo/index.html', 'text/html; charset=utf-8'],
    '/tandem-client.js': ['tandem-client.js', 'text/javascript; charset=utf-8'],
    '/ot.js': ['ot.js', 'text/javascript; charset=utf-8'],
    '/offline.js': ['offline.js', 'text/javascript; charset=utf-8'],
    '/presence.js': ['presence.js', 'text/javascript; charset=utf-8'],
    '/history.js': ['demo/history.js', 'text/javascript; charset=utf-8'],
    '/presence-view.js': ['demo/presence-view.js', 'text/javascript; charset=utf-8'],
    '/sw.js': ['demo/sw.js', 'text/javascript; charset=utf-8'],
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
export async function waitOnline(page, name) {
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
export function readPage(page) {
  return page.evaluate(() => ({
    text: document.getElementById('editor').value,
    status: document.getElementById('status').textContent,
    version: document.getElementById('version').textContent,
    chars: document.getElementById('chars').textContent,
    error: document.getElementById('error').textContent,
  }));
}

/** Types `steps` in order: strings are typed key by key, {press, times} presses a key. */
export async function typeSteps(page, steps) {
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
export async function waitBoth(pageA, pageB, what, check, timeoutMs = WAIT_MS) {
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
