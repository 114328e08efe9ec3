// End-to-end test of the demo editor's History view (libs/client-js/demo/history.js) in headless
// Chromium; the server and browser come from harness.mjs (TANDEM_BIN, CHROMIUM, TANDEM_DEMO_DIR are
// described there).
//
// One page opens the History view: its slider shows the document read-only at an earlier version (the
// text the server's history route, GET /v1/docs/{doc}/versions/{v}, gives for that version), the
// checkpoints (created with the `tandem` CLI over the Documents gRPC API: TANDEM_CLI, default `tandem`
// beside TANDEM_BIN) as marks and as buttons that jump to their version, the live version moving on
// underneath while the other page types, and the way back to live editing. Screenshots are left in a
// temp dir whose path is printed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { WAIT_MS, baseUrl, openEditor, typeSteps, waitBoth, useServerAndBrowser } from './harness.mjs';

useServerAndBrowser();

/** The document at `version` as the server's history route gives it (no authentication here). */
async function serverText(doc, version) {
  const response = await fetch(`${baseUrl}/v1/docs/${encodeURIComponent(doc)}/versions/${version}`);
  const body = await response.json();
  assert.equal(response.status, 200, `GET version ${version}: ${JSON.stringify(body)}`);
  assert.equal(response.headers.get('cache-control'), 'no-store');
  return body;
}

/** Names `version` of `doc` with the `tandem` CLI (CreateCheckpoint over gRPC, the server's port). */
async function createCheckpoint(doc, name, version) {
  const cli = process.env.TANDEM_CLI || join(dirname(process.env.TANDEM_BIN), 'tandem');
  const args = ['--address', baseUrl, '--json', 'checkpoint', 'create', doc, name, '--version', String(version)];
  try {
    const { stdout } = await promisify(execFile)(cli, args, { timeout: 15000 });
    return JSON.parse(stdout);
  } catch (err) {
    throw new Error(
      `${cli} ${args.join(' ')} failed (TANDEM_CLI names the \`tandem\` binary; make browser-tests builds it): ${err.message}`,
    );
  }
}

/** What the history view shows: the past text and which version it is (set once it is in place). */
function readHistory(page) {
  return page.evaluate(() => {
    const past = document.getElementById('past');
    const slider = document.getElementById('history-slider');
    return {
      panel: !document.getElementById('history').hidden,
      pastVisible: !past.hidden,
      editorVisible: !document.getElementById('editor').hidden,
      undoVisible: getComputedStyle(document.getElementById('undo')).visibility !== 'hidden',
      text: past.value,
      shown: past.dataset.version ?? null,
      slider: slider.value,
      max: slider.max,
      label: document.getElementById('history-label').textContent,
      checkpoints: [...document.querySelectorAll('#history-checkpoints button')].map((b) => b.textContent),
      marks: [...document.querySelectorAll('#history-marks option')].map((o) => Number(o.value)),
    };
  });
}

async function waitHistory(page, what, check) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const view = await readHistory(page);
    if (check(view)) return view;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${JSON.stringify(view)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('the history slider shows earlier versions read-only while the document lives on, then returns to live', { timeout: 60000 }, async () => {
  const doc = `e2e-history-${randomBytes(6).toString('hex')}`;
  const [pageA, pageB] = await Promise.all([openEditor('A', doc), openEditor('B', doc)]);
  const shots = mkdtempSync(join(tmpdir(), 'tandem-browser-shots-'));
  try {
    // Two stretches of typing; the version after each is known once both pages agree.
    await pageA.click('#editor');
    await typeSteps(pageA, ['first draft']);
    const [first] = await waitBoth(pageA, pageB, 'the first draft', (a, b) => a.text === 'first draft' && b.text === a.text && a.version === b.version);
    await typeSteps(pageA, [', then more é😀']);
    const final = 'first draft, then more é😀';
    const [second] = await waitBoth(pageA, pageB, 'the second stretch', (a, b) => a.text === final && b.text === final && a.version === b.version);
    const v1 = Number(first.version);
    const latest = Number(second.version);
    assert.ok(v1 > 1 && latest > v1, `versions ${v1} < ${latest}`);
    assert.equal((await serverText(doc, v1)).text, 'first draft', 'the server has the first draft at its version');
    const made = await createCheckpoint(doc, 'first draft', v1);
    assert.equal(made.version, v1, JSON.stringify(made));
    await createCheckpoint(doc, 'v0', 0);

    // Open the history: it starts at the latest version.
    await pageA.click('#history-toggle');
    let view = await waitHistory(pageA, 'the latest version shown', (v) => v.shown === String(latest));
    assert.deepEqual(
      [view.panel, view.pastVisible, view.editorVisible, view.undoVisible, view.text, view.max],
      [true, true, false, false, final, String(latest)],
      JSON.stringify(view),
    );
    assert.match(view.label, new RegExp(`version ${latest} of ${latest}`));
    view = await waitHistory(pageA, 'the checkpoint list', (v) => v.checkpoints.length > 0);
    assert.deepEqual(view.checkpoints, ['v0 · v0', `first draft · v${v1}`], 'checkpoints, oldest version first');
    assert.deepEqual(view.marks, [0, v1], 'the checkpoints marked on the slider');

    // The keyboard: Home goes to version 0, the empty text.
    await pageA.focus('#history-slider');
    await pageA.keyboard.press('Home');
    view = await waitHistory(pageA, 'version 0', (v) => v.shown === '0');
    assert.equal(view.text, '', 'version 0 is the empty text');

    // A checkpoint's button jumps to its version.
    await pageA.getByRole('button', { name: `first draft · v${v1}` }).click();
    view = await waitHistory(pageA, `the checkpoint at version ${v1}`, (v) => v.shown === String(v1));
    assert.deepEqual([view.text, view.slider], ['first draft', String(v1)]);

    // Quick moves end on the last one (debounced; older answers dropped): the text is that
    // version's, as the server has it.
    for (const v of [latest - 1, 1, latest, 2]) await pageA.locator('#history-slider').fill(String(v));
    view = await waitHistory(pageA, 'version 2', (v) => v.shown === '2');
    assert.equal(view.text, (await serverText(doc, 2)).text);
    assert.equal(view.slider, '2');
    for (const v of [1, Math.floor((v1 + latest) / 2), latest - 1]) {
      await pageA.locator('#history-slider').fill(String(v));
      view = await waitHistory(pageA, `version ${v}`, (view) => view.shown === String(v));
      assert.equal(view.text, (await serverText(doc, v)).text, `the text shown at version ${v}`);
    }
    await pageA.locator('#history-slider').fill(String(v1));
    await waitHistory(pageA, `version ${v1} again`, (v) => v.shown === String(v1) && v.text === 'first draft');
    await pageA.screenshot({ path: join(shots, 'history-a.png') });

    // B edits meanwhile: A's live document follows underneath (its version moves, so does the end of
    // the slider) and the past text shown stays put.
    await pageB.click('#editor');
    await pageB.keyboard.press('Control+End');
    await typeSteps(pageB, [' +B']);
    const live = `${final} +B`;
    const [, b] = await waitBoth(pageA, pageB, "B's edit in A's live document", (a, b) => a.text === live && b.text === live && a.version === b.version);
    view = await waitHistory(pageA, 'the slider end to follow the live version', (v) => v.max === b.version);
    assert.deepEqual([view.shown, view.text, view.editorVisible], [String(v1), 'first draft', false], JSON.stringify(view));

    // Back to live: the editor, with everything, and it edits as before.
    await pageA.click('#history-live');
    view = await readHistory(pageA);
    assert.deepEqual(
      [view.panel, view.pastVisible, view.editorVisible, view.undoVisible],
      [false, false, true, true],
      JSON.stringify(view),
    );
    await pageA.click('#editor');
    await pageA.keyboard.press('Control+End');
    await typeSteps(pageA, [' +A']);
    const [a2, b2] = await waitBoth(pageA, pageB, "A's edit after returning to live", (a, b) => a.text === `${live} +A` && b.text === a.text && a.version === b.version);
    assert.equal(a2.error + b2.error, '', 'error lines');
    await pageA.screenshot({ path: join(shots, 'history-back-a.png') });
  } finally {
    await pageA.screenshot({ path: join(shots, 'history-end-a.png') }).catch(() => {});
    console.log(`screenshots: ${shots}/history-a.png ${shots}/history-back-a.png`);
  }
  assert.deepEqual([...pageA.problems, ...pageB.problems], [], 'errors on the pages');
});
