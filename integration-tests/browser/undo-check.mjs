// The undo scenario of the demo editor, shared by the single-process test (demo.test.mjs) and the
// two-gateway test (cluster-demo.test.mjs): undo and redo revert this page's own edits only
// (libs/client-js/README.md, "Undo and redo"). A's typing run is one undo step; undoing it while B keeps
// typing removes A's text and nothing of B's, on both pages; Redo puts it back.
import assert from 'node:assert/strict';
import { typeSteps, waitBoth } from './harness.mjs';

/** Runs the scenario on two pages open on the same fresh document. */
export async function checkUndo(pageA, pageB) {
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
}
