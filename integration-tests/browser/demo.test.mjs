// End-to-end test of the demo editor page (libs/client-js/demo/index.html) in headless Chromium; the
// server and browser come from harness.mjs (TANDEM_BIN, CHROMIUM, TANDEM_DEMO_DIR are described there).
//
// Two pages, in two browser contexts (two users), open the same fresh document, type into the textarea
// at the same time at different caret positions (with Backspace, non-ASCII and astral characters), and
// must converge to the same, exactly predictable text, showing "online" and the same version. Then one
// page is reloaded and must show the same text and version again, from the server's snapshot.
// Screenshots of both pages are left in a temp dir whose path is printed. A second test has one page
// undo its own typing run (Ctrl+Z) while the other types on, then redo it (the Redo button).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DEMO_DIR, baseUrl, cpLen, openEditor, readPage, typeSteps, waitBoth, waitOnline, useServerAndBrowser } from './harness.mjs';
import { checkUndo } from './undo-check.mjs';

useServerAndBrowser();

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

// Undo and redo revert this page's own edits only: see undo-check.mjs.
test('undo on one page reverts only its own edit while the other page keeps typing', { timeout: 50000 }, async () => {
  const doc = `e2e-undo-${randomBytes(6).toString('hex')}`;
  const [pageA, pageB] = await Promise.all([openEditor('A', doc), openEditor('B', doc)]);
  try {
    await checkUndo(pageA, pageB);
  } finally {
    const shots = mkdtempSync(join(tmpdir(), 'tandem-browser-shots-'));
    await pageA.screenshot({ path: join(shots, 'undo-a.png') }).catch(() => {});
    await pageB.screenshot({ path: join(shots, 'undo-b.png') }).catch(() => {});
    console.log(`screenshots: ${shots}/undo-a.png ${shots}/undo-b.png`);
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems], [], 'errors on the pages');
});
