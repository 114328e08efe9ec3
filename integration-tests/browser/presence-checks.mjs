// The presence and offline scenarios of the demo page, shared by both modes: presence.test.mjs runs
// them on one server process (harness.mjs), cluster-demo.test.mjs with page A on gateway A and page B
// on gateway B. Pages come in ready (online, textarea enabled, same fresh document).
//
// - Carets: both pages type at once at different places; then each page must draw the other's caret
//   (demo/presence-view.js, over the textarea) at the character where the other page's own caret is,
//   both by the index it draws at and by where it is on screen: the overlay's caret must sit where a
//   monospace layout puts that character (line and column, measured independently with a canvas).
// - Offline: a page taken offline (Playwright setOffline) says so, keeps its edits ("N edits waiting"),
//   is reloaded while still offline (the service worker serves the page, localStorage the edits), shows
//   the same text and count, and once back online delivers its edits exactly once; both pages converge.

import assert from 'node:assert/strict';
import { cpLen, readPage, typeSteps, waitBoth, WAIT_MS } from './harness.mjs';

/** Where the page draws the other participants' carets: [{client, name, index, left, top}]. */
export function readCarets(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#carets .remote-caret')].map((c) => ({
      client: c.dataset.client,
      name: c.querySelector('.remote-name').textContent,
      index: Number(c.dataset.index),
      left: parseFloat(c.style.left),
      top: parseFloat(c.style.top),
    })),
  );
}

/** This page's own caret (code points) and its name in the participant list. */
function ownCaret(page) {
  return page.evaluate(() => {
    const editor = document.getElementById('editor');
    const head = editor.selectionDirection === 'backward' ? editor.selectionStart : editor.selectionEnd;
    return {
      index: Array.from(editor.value.slice(0, head)).length,
      name: document.querySelector('#people li').textContent.replace(/ \(you\)$/, ''),
      client: window.tandemClient.author,
    };
  });
}

/**
 * Where character `index` of the textarea's text must appear in a monospace layout without wrapping
 * (the test's texts are short ASCII lines): the column times a character's width measured with a
 * canvas, the line times the line height, from the textarea's padding and border.
 */
function expectedPoint(page, index) {
  return page.evaluate((index) => {
    const editor = document.getElementById('editor');
    const style = getComputedStyle(editor);
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = `${style.fontSize} ${style.fontFamily}`;
    const before = editor.value.slice(0, index);
    const lines = before.split('\n');
    const column = lines[lines.length - 1];
    return {
      left: parseFloat(style.borderLeftWidth) + parseFloat(style.paddingLeft) + ctx.measureText(column).width,
      top: parseFloat(style.borderTopWidth) + parseFloat(style.paddingTop) + (lines.length - 1) * parseFloat(style.lineHeight),
    };
  }, index);
}

/** Waits until `page` draws `other`'s caret at its own caret's index; returns the drawn caret. */
async function waitCaret(page, name, other) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const carets = await readCarets(page);
    const caret = carets.find((c) => c.client === other.client);
    if (caret && caret.index === other.index && caret.name === other.name) return caret;
    if (Date.now() > deadline) {
      assert.fail(`${name} draws ${JSON.stringify(carets)}, not ${other.name}'s caret at ${other.index} (${JSON.stringify(other)})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Both pages type at once on two lines; each must then show the other's caret on the right character.
 * Returns the converged text.
 */
export async function checkCarets(pageA, pageB) {
  const seed = 'first line: 0123456789\nsecond line: abcdefghij';
  await pageA.click('#editor');
  await typeSteps(pageA, [seed]);
  await waitBoth(pageA, pageB, 'the seed on both pages', (a, b) => a.text === seed && b.text === seed);

  // A goes to the start of the text, B to just after "abcde" on the second line; then both type.
  await pageB.click('#editor');
  await Promise.all([pageA.keyboard.press('Control+Home'), pageB.keyboard.press('Control+End')]);
  await typeSteps(pageB, [{ press: 'ArrowLeft', times: 5 }]);
  const chunkA = 'A was here ';
  const chunkB = '[B]';
  await Promise.all([
    typeSteps(pageA, ['A was hxx', { press: 'Backspace', times: 2 }, 'ere ']),
    typeSteps(pageB, ['[', 'B', ']']),
  ]);
  const expected = `${chunkA}first line: 0123456789\nsecond line: abcde${chunkB}fghij`;
  await waitBoth(pageA, pageB, 'both textareas to converge', (a, b) => a.text === expected && b.text === expected);

  const [ownA, ownB] = [await ownCaret(pageA), await ownCaret(pageB)];
  assert.equal(ownA.index, cpLen(chunkA), "A's own caret is after what A typed");
  assert.equal(ownB.index, expected.indexOf(chunkB) + cpLen(chunkB), "B's own caret is after what B typed");
  assert.notEqual(ownA.name, ownB.name, 'the two pages have different names');

  // Each page draws the other's caret at that index, with its name, on that line and column.
  for (const [name, page, other] of [['A', pageA, ownB], ['B', pageB, ownA]]) {
    const caret = await waitCaret(page, name, other);
    const want = await expectedPoint(page, other.index);
    assert.ok(
      Math.abs(caret.left - want.left) <= 1.5 && Math.abs(caret.top - want.top) <= 1.5,
      `${name} draws ${other.name}'s caret at (${caret.left}, ${caret.top}), but character ${other.index} is at (${want.left}, ${want.top})`,
    );
    const people = await page.locator('#people li').allTextContents();
    assert.deepEqual(people, [`${name === 'A' ? ownA.name : ownB.name} (you)`, other.name], `${name}: who is in the document`);
  }

  // B selects "fgh": A draws the selection, one box per character, in B's colour, and B's caret after it.
  await typeSteps(pageB, [{ press: 'Shift+ArrowRight', times: 3 }]);
  const selected = { ...ownB, index: ownB.index + 3 };
  await waitCaret(pageA, 'A', selected);
  const boxes = await pageA.evaluate(() => [...document.querySelectorAll('#carets .remote-selection')].map((b) => b.style.background));
  assert.equal(boxes.length, 3, "A draws B's selection of three characters");
  const caretColour = await pageA.evaluate(() => document.querySelector('#carets .remote-caret').style.borderColor);
  assert.ok(boxes.every((c) => c === caretColour), `the selection is in B's colour ${caretColour}: ${boxes}`);
  return expected;
}

/** The browser's own log lines about the sockets it could not open while offline: expected then. */
export const offlineNoise = (problem) => /ERR_INTERNET_DISCONNECTED|ERR_NAME_NOT_RESOLVED/.test(problem);

/** page.waitForFunction, failing with `what` and what the page shows. */
async function waitFor(page, what, fn) {
  try {
    await page.waitForFunction(fn);
  } catch (err) {
    const seen = await page.evaluate(() => window.testLog ?? []);
    throw new Error(
      `waiting for ${what}: ${err.message}\n${JSON.stringify({ ...(await readPage(page)), ...(await readOffline(page)) })}\nlog: ${seen.join('; ')}`,
    );
  }
}

function readOffline(page) {
  return page.evaluate(() => ({
    banner: !document.getElementById('offline-banner').hidden,
    pending: document.getElementById('pending').textContent,
    controlled: navigator.serviceWorker?.controller != null,
    onLine: navigator.onLine,
    socket: window.tandemClient.socket?.readyState ?? null,
  }));
}

/**
 * Page A goes offline, types, is reloaded still offline, comes back: its edits arrive exactly once.
 * `shots(name)` takes screenshots of both pages under that name.
 */
export async function checkOfflineReload(pageA, pageB, shots) {
  const seed = 'shared seed';
  await pageA.click('#editor');
  await typeSteps(pageA, [seed]);
  await waitBoth(pageA, pageB, 'the seed on both pages', (a, b) => a.text === seed && b.text === seed);
  // The service worker controls the page (clients.claim), so a reload without network can load it.
  await waitFor(pageA, 'the service worker to control the page', () => navigator.serviceWorker?.controller != null);

  // What the page went through, for a failure's message: the browser's offline event, status changes.
  await pageA.evaluate(() => {
    const start = performance.now();
    window.testLog = [];
    const log = (what) => window.testLog.push(`${Math.round(performance.now() - start)} ms ${what}`);
    addEventListener('offline', () => log(`offline event, socket ${window.tandemClient.socket?.readyState}`));
    new MutationObserver(() => log(`status ${document.getElementById('status').textContent}`)).observe(
      document.getElementById('status'),
      { childList: true, characterData: true, subtree: true },
    );
  });
  await pageA.context().setOffline(true);
  await waitFor(pageA, 'A to say offline', () => document.getElementById('status').textContent === 'offline');
  await pageA.keyboard.press('Control+End');
  await typeSteps(pageA, [' ~offline']);
  await pageB.click('#editor');
  await pageB.keyboard.press('Control+Home');
  await typeSteps(pageB, ['B> ']);
  const offlineEdits = cpLen(' ~offline');
  const waiting = `${offlineEdits} edits waiting`;
  const before = await readOffline(pageA);
  assert.deepEqual(before, { banner: true, pending: waiting, controlled: true, onLine: false, socket: null }, 'A offline, before the reload');
  assert.equal((await readPage(pageB)).text, `B> ${seed}`, "B does not get A's offline edits");
  await shots('offline-before-reload');

  await pageA.reload();
  // The text shows from the saved state first; the status turns from 'connecting' to 'offline' once
  // the page's connection attempt fails, a moment later (a fresh-clone run read it in between).
  await waitFor(
    pageA,
    'A reloaded offline to show its text and say offline',
    () => !document.getElementById('editor').disabled && document.getElementById('status').textContent === 'offline',
  );
  const reloaded = await readPage(pageA);
  assert.equal(reloaded.text, `${seed} ~offline`, 'A reloaded offline shows its text, its edits included');
  assert.equal(reloaded.status, 'offline', 'A reloaded offline says offline');
  assert.deepEqual(await readOffline(pageA), { banner: true, pending: waiting, controlled: true, onLine: false, socket: null }, 'A reloaded offline');
  await shots('offline-after-reload');

  await pageA.context().setOffline(false);
  const expected = `B> ${seed} ~offline`;
  const [a, b] = await waitBoth(
    pageA,
    pageB,
    "A's offline edits on both pages once A is back online, with the same version",
    (a, b) => a.text === expected && b.text === expected && a.version === b.version && a.status === 'online',
    30000, // the client's reconnect backoff grew while offline (up to 10 s)
  );
  assert.equal((await readOffline(pageA)).banner, false, 'no offline banner once online');
  // Exactly once: a second delivery of the offline op would show its text twice.
  assert.equal(a.text.split('~offline').length - 1, 1, 'the offline edits arrive once');
  await shots('offline-back-online');
  return [a, b];
}
