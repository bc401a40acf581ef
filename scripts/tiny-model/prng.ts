/**
 * Seeded weights. Each tensor draws from its own stream, keyed by the seed and the tensor's
 * name, so adding a layer never changes the others. Integer arithmetic only: the same seed
 * gives the same bits on every platform.
 */

/** FNV-1a over the UTF-16 code units of `text`, mixed with `seed`. */
export function hashName(text: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** mulberry32: a small 32-bit generator of uniform numbers in [0, 1). */
export function mulberry32(state: number): () => number {
  let a = state >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` values, uniform with mean 0 and standard deviation `std` (bound √3·std). */
export function uniformWeights(seed: number, name: string, count: number, std: number): Float32Array {
  const next = mulberry32(hashName(name, seed));
  const bound = Math.sqrt(3) * std;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (2 * next() - 1) * bound;
  return out;
}
