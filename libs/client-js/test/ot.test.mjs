// Unit and property tests of ot.js: examples from PROTOCOL.md, normal form, errors, code point
// counting, and seeded randomized checks against the algebraic laws and a port of ot.js itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  apply,
  baseLength,
  compose,
  fromDiff,
  isNoop,
  normalize,
  OtError,
  targetLength,
  transform,
  transformIndex,
} from '../ot.js';
import * as client from '../tandem-client.js';
import { BMP, cpLen, int, randomOp, randomText, rng, seedFor } from './helpers.mjs';
import { refCompose, refNormalize, refTransform, refTransformIndex } from './otjs-reference.mjs';

/** Asserts that fn throws an Error whose code is `code`. */
function throwsCode(fn, code) {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof Error, 'an Error');
    assert.ok(err instanceof OtError, 'an OtError');
    assert.equal(err.code, code, err.message);
    assert.ok(err.message.length > 0);
    return true;
  });
}

test('the examples of PROTOCOL.md', () => {
  assert.equal(apply('hello', [5, ' world']), 'hello world');
  assert.equal(apply('hello', [1, -4, 'ey']), 'hey');
  assert.deepEqual(normalize([1, -4, 'ey']), [1, 'ey', -4]);
});

test('normal form: no zero-length component, same kinds merged, insert before delete', () => {
  assert.deepEqual(normalize([]), []);
  assert.deepEqual(normalize([0, '', 0]), []);
  assert.deepEqual(normalize([2, 3, 0, -1, 'a', '', 'b', -2]), [5, 'ab', -3]);
  assert.deepEqual(normalize([-1, 'a']), ['a', -1]);
  assert.deepEqual(normalize(['a', -1, 'b']), ['ab', -1]);
  assert.deepEqual(normalize([-1, 'a', -1, 'b', 2]), ['ab', -2, 2]);
  assert.deepEqual(normalize([1, 'x', 1]), [1, 'x', 1]);
  // Builder semantics match the Rust crate's test.
  assert.deepEqual(normalize([0, 2, 3, -1, 'a', '', 'b', -2]), [5, 'ab', -3]);
  assert.equal(baseLength([0, 2, 3, -1, 'a', '', 'b', -2]), 8);
  assert.equal(targetLength([0, 2, 3, -1, 'a', '', 'b', -2]), 7);
});

test('lengths count Unicode scalar values, not UTF-16 units', () => {
  assert.deepEqual(normalize([1, '😀é', -2, 0, '']), [1, '😀é', -2]);
  assert.equal(baseLength([1, '😀é', -2]), 3);
  assert.equal(targetLength([1, '😀é', -2]), 3);
  assert.equal(apply('😀ab', [1, -1, 'é', 1]), '😀éb');
  assert.equal(apply('a😀b', [1, -1, 1]), 'ab');
  throwsCode(() => apply('😀', [2]), 'base_length_mismatch');
  // Splitting an astral insert in compose must not cut a surrogate pair.
  assert.deepEqual(compose(['😀👍x'], [1, -1, 1]), ['😀x']);
  assert.deepEqual(compose(['😀👍x'], [2, 'y', 1]), ['😀👍yx']);
  assert.equal(transformIndex(['😀'], 0), 1);
});

test('errors carry a code', () => {
  throwsCode(() => normalize({ a: 1 }), 'not_an_array');
  throwsCode(() => normalize('abc'), 'not_an_array');
  throwsCode(() => normalize(null), 'not_an_array');
  throwsCode(() => normalize([1, 2.5]), 'bad_component');
  throwsCode(() => normalize([1, null]), 'bad_component');
  throwsCode(() => normalize([true]), 'bad_component');
  throwsCode(() => normalize([[1]]), 'bad_component');
  throwsCode(() => normalize([{}]), 'bad_component');
  throwsCode(() => normalize([NaN]), 'bad_component');
  throwsCode(() => normalize([Infinity]), 'bad_component');
  throwsCode(() => normalize([2 ** 41]), 'count_out_of_range');
  throwsCode(() => normalize([2 ** 40, 2 ** 40]), 'length_overflow');
  throwsCode(() => apply('abc', [2]), 'base_length_mismatch');
  throwsCode(() => apply('abc', [4]), 'base_length_mismatch');
  throwsCode(() => apply('abc', [1, -3]), 'base_length_mismatch');
  throwsCode(() => apply('abc', 'abc'), 'not_an_array');
  throwsCode(() => compose([1, 'a'], [1]), 'compose_length_mismatch');
  throwsCode(() => transform([1], [2]), 'transform_length_mismatch');
  assert.match(
    (() => {
      try {
        normalize([1, null]);
      } catch (e) {
        return e.message;
      }
    })(),
    /component 1 is null/,
  );
});

test('transform breaks ties like ot.js: a\'s insert goes first', () => {
  const [a1, b1] = transform(['a'], ['b']);
  assert.deepEqual(a1, ['a', 1]);
  assert.deepEqual(b1, [1, 'b']);
  assert.equal(apply('b', a1), 'ab');
  assert.equal(apply('a', b1), 'ab');
  // Same on a non-empty text, at the same inner position.
  const [x, y] = transform([2, 'X', 1], [2, 'Y', 1]);
  assert.equal(apply(apply('abc', [2, 'X', 1]), y), 'abXYc');
  assert.equal(apply(apply('abc', [2, 'Y', 1]), x), 'abXYc');
  // Deletes of the same range cancel out; insert inside a deleted range survives.
  assert.deepEqual(transform([-3], [-3]), [[], []]);
  const [d, i] = transform([-3], [1, 'q', 2]);
  assert.equal(apply(apply('abc', [-3]), i), 'q');
  assert.equal(apply(apply('abc', [1, 'q', 2]), d), 'q');
});

test('transformIndex: an insert at the cursor pushes it right, deletes pull it back', () => {
  assert.equal(transformIndex(['ab', 3], 0), 2);
  assert.equal(transformIndex([1, 'ab', 2], 1), 3);
  assert.equal(transformIndex([1, 'ab', 2], 2), 4);
  assert.equal(transformIndex([1, 'ab', 2], 0), 0);
  assert.equal(transformIndex([3, 'ab'], 3), 5);
  assert.equal(transformIndex([1, -2, 1], 0), 0);
  assert.equal(transformIndex([1, -2, 1], 1), 1);
  assert.equal(transformIndex([1, -2, 1], 2), 1);
  assert.equal(transformIndex([1, -2, 1], 3), 1);
  assert.equal(transformIndex([1, -2, 1], 4), 2);
  assert.equal(transformIndex([-4], 4), 0);
  assert.equal(transformIndex([1, 'x', -2, 1], 3), 2);
});

test('fromDiff finds the changed middle in code points', () => {
  assert.deepEqual(fromDiff('', ''), []);
  assert.deepEqual(fromDiff('abc', 'abc'), [3]);
  assert.deepEqual(fromDiff('', 'hi'), ['hi']);
  assert.deepEqual(fromDiff('hi', ''), [-2]);
  assert.deepEqual(fromDiff('hello', 'help'), [3, 'p', -2]);
  assert.deepEqual(fromDiff('a😀b', 'a👍b'), [1, '👍', -1, 1]);
  assert.deepEqual(fromDiff('😀😀', '😀'), [1, -1]);
  // Without a hint, an ambiguous insert lands at the end of the run; with the caret, where typed.
  assert.deepEqual(fromDiff('aa', 'aaa'), [2, 'a']);
  assert.deepEqual(fromDiff('aa', 'aaa', 1), ['a', 2]);
  assert.deepEqual(fromDiff('aa', 'aaa', 2), [1, 'a', 1]);
  assert.deepEqual(fromDiff('aaa', 'aa', 1), [1, -1, 1]);
  assert.deepEqual(fromDiff('abab', 'ab', 0), [-2, 2]);
  assert.deepEqual(fromDiff('x', 'y', 99), ['y', -1]); // a bad hint is ignored
  assert.ok(isNoop(fromDiff('same', 'same')));
});

test('the main module re-exports the OT API', () => {
  for (const name of ['normalize', 'apply', 'compose', 'transform', 'transformIndex', 'baseLength', 'targetLength', 'fromDiff']) {
    assert.equal(typeof client[name], 'function', name);
  }
});

test('randomized: laws of apply, compose, transform, fromDiff (seeded)', () => {
  const rand = rng(seedFor('ot laws'));
  for (let iter = 0; iter < 3000; iter++) {
    const text = randomText(rand);
    const a = randomOp(rand, cpLen(text), { messy: true });
    const na = normalize(a);
    assert.deepEqual(normalize(na), na, 'normalize is idempotent');
    assert.equal(apply(text, a), apply(text, na));
    const afterA = apply(text, a);
    assert.equal(cpLen(afterA), targetLength(a));

    // compose: one op with the effect of both, in normal form.
    const b = randomOp(rand, cpLen(afterA), { messy: true });
    const ab = compose(a, b);
    assert.equal(apply(text, ab), apply(afterA, b), JSON.stringify({ text, a, b, ab }));
    assert.deepEqual(normalize(ab), ab);

    // transform: both orders converge (TP1), results in normal form.
    const c = randomOp(rand, cpLen(text), { messy: true });
    const [a1, c1] = transform(a, c);
    assert.equal(apply(apply(text, a), c1), apply(apply(text, c), a1), JSON.stringify({ text, a, c }));
    assert.deepEqual(normalize(a1), a1);
    assert.deepEqual(normalize(c1), c1);

    // fromDiff gives an op that turns one text into the other.
    const other = randomText(rand);
    assert.equal(apply(text, fromDiff(text, other)), other);
    const hint = int(rand, cpLen(other) + 1);
    assert.equal(apply(text, fromDiff(text, other, hint)), other);

    // transformIndex stays within the result.
    const idx = int(rand, cpLen(text) + 1);
    const moved = transformIndex(a, idx);
    assert.ok(moved >= 0 && moved <= targetLength(a), `${moved} in ${JSON.stringify(a)}`);
  }
});

test('randomized: identical to a port of ot.js on BMP text (seeded)', () => {
  const rand = rng(seedFor('ot.js equivalence'));
  const opts = { messy: true, alphabet: BMP };
  for (let iter = 0; iter < 3000; iter++) {
    const text = randomText(rand, 20, BMP);
    const a = randomOp(rand, text.length, opts);
    const b = randomOp(rand, targetLength(a), opts);
    const c = randomOp(rand, text.length, opts);
    assert.deepEqual(normalize(a), refNormalize(a));
    assert.deepEqual(compose(a, b), refCompose(a, b), JSON.stringify({ a, b }));
    assert.deepEqual(transform(a, c), refTransform(a, c), JSON.stringify({ a, c }));
    const idx = int(rand, text.length + 1);
    assert.equal(transformIndex(a, idx), refTransformIndex(a, idx), JSON.stringify({ a, idx }));
  }
});
