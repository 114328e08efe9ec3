// End-to-end test of the demo page's presence and offline state on one server process, in headless
// Chromium (server and browser from harness.mjs): the other page's caret drawn on the right character
// after concurrent typing, and a page reloaded while offline that keeps its edits and delivers them
// exactly once when back online. The scenarios are in presence-checks.mjs (cluster-demo.test.mjs runs
// them across two gateways). Screenshots are left in a temp dir whose path is printed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { baseUrl, openEditor, useServerAndBrowser } from './harness.mjs';
import { checkCarets, checkOfflineReload, offlineNoise } from './presence-checks.mjs';

useServerAndBrowser();

function screenshots(pageA, pageB) {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-presence-shots-'));
  console.log(`screenshots in ${dir}`);
  return async (name) => {
    await pageA.screenshot({ path: join(dir, `${name}-a.png`) }).catch(() => {});
    await pageB.screenshot({ path: join(dir, `${name}-b.png`) }).catch(() => {});
  };
}

test("each page shows the other's caret on the right character after concurrent typing", { timeout: 60000 }, async () => {
  const doc = `presence-${randomBytes(6).toString('hex')}`;
  console.log(`document ${doc} on ${baseUrl}`);
  const [pageA, pageB] = await Promise.all([openEditor('A', doc), openEditor('B', doc)]);
  const shots = screenshots(pageA, pageB);
  try {
    await checkCarets(pageA, pageB);
  } finally {
    await shots('carets');
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems], [], 'errors on the pages');
});

test('a page reloaded while offline keeps its edits and delivers them once when back online', { timeout: 90000 }, async () => {
  const doc = `offline-${randomBytes(6).toString('hex')}`;
  console.log(`document ${doc} on ${baseUrl}`);
  const [pageA, pageB] = await Promise.all([openEditor('A', doc), openEditor('B', doc)]);
  const shots = screenshots(pageA, pageB);
  try {
    await checkOfflineReload(pageA, pageB, shots);
  } catch (err) {
    await shots('failed');
    throw err;
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems].filter((p) => !offlineNoise(p)), [], 'errors on the pages');
});
