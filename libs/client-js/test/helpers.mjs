// Shared test helpers: a seeded PRNG (so every randomized test can be replayed with SEED=...) and a
// generator of random texts and operations over code points, including astral characters.

/**
 * The seed of this run: env SEED if set, else a random one. Printed so a failure can be replayed.
 * @param {string} name test name, printed with the seed
 */
export function seedFor(name) {
  const seed = process.env.SEED !== undefined ? Number(process.env.SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  console.log(`${name}: SEED=${seed} (replay with SEED=${seed})`);
  return seed;
}

/** mulberry32: small, fast, good enough to drive tests. Returns a function giving floats in [0, 1). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random integer in [0, n). */
export const int = (rand, n) => Math.floor(rand() * n);

// Astral (surrogate pairs), combining and plain characters: lengths in UTF-16 and code points differ.
const ALPHABET = Array.from('ab cdé\n😀👍🏽ñ漢x');
/** Only characters of the Basic Multilingual Plane: there UTF-16 units and code points coincide. */
export const BMP = Array.from('ab cdé\nñ漢x');

/** A random string of up to `max` code points. */
export function randomString(rand, max = 4, alphabet = ALPHABET) {
  const n = 1 + int(rand, max);
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[int(rand, alphabet.length)];
  return s;
}

/** A random text of up to `max` code points. */
export function randomText(rand, max = 20, alphabet = ALPHABET) {
  const n = int(rand, max + 1);
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[int(rand, alphabet.length)];
  return s;
}

/**
 * A random operation on a text of `len` code points, in wire form, deliberately not normalised
 * sometimes (zero retains, split components) so normalisation is exercised too.
 */
export function randomOp(rand, len, { messy = false, alphabet = ALPHABET } = {}) {
  const op = [];
  let left = len;
  while (left > 0 || (op.length === 0 && rand() < 0.5)) {
    const r = rand();
    if (r < 0.2) {
      op.push(randomString(rand, 4, alphabet));
    } else if (r < 0.55 && left > 0) {
      const n = 1 + int(rand, Math.min(left, 5));
      op.push(-n);
      left -= n;
    } else if (left > 0) {
      const n = 1 + int(rand, Math.min(left, 8));
      op.push(n);
      left -= n;
    } else {
      break;
    }
    if (messy && rand() < 0.1) op.push(0);
    if (messy && rand() < 0.05) op.push('');
  }
  if (rand() < 0.3) op.push(randomString(rand, 4, alphabet));
  return op;
}

/** Code point length. */
export const cpLen = (s) => Array.from(s).length;
